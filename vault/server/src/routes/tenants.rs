//! Tenants, principals, approver sets and policies.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use coffre_api::wire::{
    ApprovePolicy, ApproverSetView, ApproverView, ChangeApprovers, CreatePrincipal, CreateTenant, CreatedPrincipal,
    KekView, Logged, PolicyView, PrincipalView, ProposePolicy, Role, TenantView,
};
use coffre_broker::state::policy_version;
use coffre_log::Entry;
use coffre_policies::{Approval, ApproverSet, Policy};
use coffre_seal::{RecipientSecretKey, SystemRandom};
use sqlx::Row;

use super::{Body, id};
use crate::app::{AppState, Principal, new_token, now, token_hash};
use crate::error::{ApiError, ApiResult};
use crate::keys::kek_aad;

/// The current KEK of `tenant`.
pub async fn kek_view(app: &AppState, tenant: &str) -> ApiResult<KekView> {
    // The version the log made active (a row a crashed rotation left unlogged is not it).
    let version = app.log.read(|s| active_kek(s, tenant)).ok_or(ApiError::NotFound)?;
    let row = sqlx::query("SELECT version, public_key FROM keks WHERE tenant = $1 AND version = $2")
        .bind(tenant)
        .bind(crate::db::q::n(version))
        .fetch_optional(&app.pool)
        .await?
        .ok_or_else(|| ApiError::Unavailable(format!("{tenant}'s KEK version {version} is not stored")))?;
    let public: String = row.try_get("public_key")?;
    let key: coffre_seal::RecipientPublicKey = public.parse().map_err(ApiError::internal)?;
    Ok(KekView { version: crate::db::q::u(&row, "version")?, public_key: public, key_id: key.key_id().to_hex() })
}

/// The log's key id of `tenant`'s KEK `version`.
pub fn kek_key_id(tenant: &str, version: u64) -> String {
    format!("kek-{tenant}-v{version}")
}

/// The version of `tenant`'s newest KEK in the log (rotation retires every older one); None
/// for no such tenant.
pub fn active_kek(state: &coffre_broker::LogState, tenant: &str) -> Option<u64> {
    let mut newest = None;
    let mut version = 1;
    while state.key(&kek_key_id(tenant, version)).is_some_and(|k| k.tenant == tenant) {
        newest = Some(version);
        version += 1;
    }
    newest
}

fn view(app: &AppState, tenant: &str, kek: KekView) -> ApiResult<TenantView> {
    app.log.read(|s| {
        let t = s.tenant(tenant).ok_or(ApiError::NotFound)?;
        Ok(TenantView {
            id: tenant.to_owned(),
            name: t.name.clone(),
            kek,
            approver_set: t.approvers.as_ref().map_or(0, |a| a.version.get()),
        })
    })
}

/// `POST /v1/tenants`: a tenant, its first KEK, both logged.
pub async fn create_tenant(
    State(app): State<AppState>,
    who: Principal,
    Body(req): Body<CreateTenant>,
) -> ApiResult<(StatusCode, Json<TenantView>)> {
    if !who.is_vault_admin() {
        return Err(ApiError::Forbidden("only the vault administrator creates tenants".into()));
    }
    id("tenant id", &req.id)?;
    if req.name.trim().is_empty() || req.name.len() > 128 || req.name.chars().any(char::is_control) {
        return Err(ApiError::bad("invalid_name", "the tenant's name is 1-128 printable characters"));
    }
    if app.log.read(|s| s.tenant(&req.id).is_some()) {
        return Err(ApiError::Conflict(format!("tenant {} exists", req.id)));
    }
    // The KEK first (a retry after a failure reuses it); then the log.
    let existing =
        sqlx::query("SELECT version FROM keks WHERE tenant = $1").bind(&req.id).fetch_optional(&app.pool).await?;
    if existing.is_none() {
        let kek = RecipientSecretKey::generate(&mut SystemRandom).map_err(ApiError::internal)?;
        let sealed = app.root.seal(&kek_aad(&req.id, 1), kek.to_key_file().as_bytes()).map_err(ApiError::internal)?;
        sqlx::query(
            "INSERT INTO keks (tenant, version, public_key, sealed_private, created_at) VALUES ($1, 1, $2, $3, $4)",
        )
        .bind(&req.id)
        .bind(kek.public().to_string())
        .bind(sealed)
        .bind(crate::db::q::n(now()))
        .execute(&app.pool)
        .await?;
    }
    let (tenant, name) = (req.id.clone(), req.name.clone());
    app.log
        .call(move |ledger, _| {
            let at = ledger.next_at(now());
            ledger.record_pending(&Entry::TenantCreated { at, tenant: tenant.clone(), name })?;
            ledger.record_pending(&Entry::KeyCreated {
                at,
                tenant: tenant.clone(),
                key_id: kek_key_id(&tenant, 1),
                purpose: "kek".into(),
                dataset: None,
            })?;
            Ok(())
        })
        .await?;
    let kek = kek_view(&app, &req.id).await?;
    Ok((StatusCode::CREATED, Json(view(&app, &req.id, kek)?)))
}

/// `PUT /v1/tenants/{tenant}/testing`: marks (or unmarks) a tenant for testing — the only
/// tenants a development vault serves the KBS sample TEE (vault administrator; the log refuses
/// the mark outside development mode).
pub async fn mark_testing(
    State(app): State<AppState>,
    who: Principal,
    Path(tenant): Path<String>,
    Body(req): Body<coffre_api::wire::MarkTesting>,
) -> ApiResult<Json<Logged>> {
    if !who.is_vault_admin() {
        return Err(ApiError::Forbidden("only the vault administrator marks tenants for testing".into()));
    }
    if app.log.read(|s| s.tenant(&tenant).is_none()) {
        return Err(ApiError::NotFound);
    }
    let testing = req.testing;
    let (log_index, _) = app
        .log
        .call(move |ledger, _| {
            let at = ledger.next_at(now());
            ledger.record(&Entry::TenantTesting { at, tenant, testing })
        })
        .await?;
    Ok(Json(Logged { log_index }))
}

/// `GET /v1/tenants`: every tenant for the vault administrator, one's own otherwise.
pub async fn list_tenants(State(app): State<AppState>, who: Principal) -> ApiResult<Json<Vec<TenantView>>> {
    let ids: Vec<String> = if who.is_vault_admin() {
        app.log.read(|s| s.tenant_ids().map(str::to_owned).collect())
    } else {
        who.tenant.iter().cloned().collect()
    };
    let mut out = Vec::new();
    for t in ids {
        let kek = kek_view(&app, &t).await?;
        out.push(view(&app, &t, kek)?);
    }
    Ok(Json(out))
}

/// `GET /v1/tenants/{tenant}`: its KEK public key (what owners seal to) and approver set.
pub async fn get_tenant(
    State(app): State<AppState>,
    who: Principal,
    Path(tenant): Path<String>,
) -> ApiResult<Json<TenantView>> {
    who.require_or_vault_admin(&tenant, &Role::ALL)?;
    let kek = kek_view(&app, &tenant).await?;
    Ok(Json(view(&app, &tenant, kek)?))
}

/// `POST /v1/tenants/{tenant}/principals`: a principal and its token, shown once.
pub async fn create_principal(
    State(app): State<AppState>,
    who: Principal,
    Path(tenant): Path<String>,
    Body(req): Body<CreatePrincipal>,
) -> ApiResult<(StatusCode, Json<CreatedPrincipal>)> {
    who.require_or_vault_admin(&tenant, &[Role::Admin])?;
    if app.log.read(|s| s.tenant(&tenant).is_none()) {
        return Err(ApiError::NotFound);
    }
    id("principal name", &req.name)?;
    if req.roles.is_empty() {
        return Err(ApiError::bad("invalid_roles", "give at least one role"));
    }
    if let Some(k) = &req.signing_key {
        k.parse::<coffre_seal::VerifyingKey>().map_err(|e| {
            ApiError::bad_hint("invalid_signing_key", e.to_string(), "make one with `coffre keygen --signing`")
        })?;
    }
    let cert = req
        .client_cert_sha256
        .as_deref()
        .map(|c| coffre_api::pin::Fingerprint::parse(c).map(|f| hex::encode(f.0)))
        .transpose()
        .map_err(|e| ApiError::bad("invalid_fingerprint", e))?;
    let token = new_token()?;
    let pid = format!("p-{}", &token_hash(&token)[..16]);
    let mut roles = req.roles.clone();
    roles.sort();
    roles.dedup();
    let roles_text = roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",");
    let inserted = sqlx::query(
        "INSERT INTO principals (id, tenant, name, roles, token_hash, cert_sha256, signing_key, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&pid)
    .bind(&tenant)
    .bind(&req.name)
    .bind(&roles_text)
    .bind(token_hash(&token))
    .bind(cert.clone())
    .bind(req.signing_key.clone())
    .bind(crate::db::q::n(now()))
    .execute(&app.pool)
    .await;
    if let Err(e) = inserted {
        if e.to_string().to_lowercase().contains("unique") {
            return Err(ApiError::Conflict("that client certificate is already registered".into()));
        }
        return Err(e.into());
    }
    let principal = Principal {
        id: pid,
        tenant: Some(tenant),
        name: req.name,
        roles,
        signing_key: req.signing_key,
        cert_sha256: cert,
    };
    app.principals.lock().insert(Some(token_hash(&token)), principal.clone());
    Ok((StatusCode::CREATED, Json(CreatedPrincipal { principal: principal.view(), token })))
}

/// `GET /v1/tenants/{tenant}/principals`.
pub async fn list_principals(
    State(app): State<AppState>,
    who: Principal,
    Path(tenant): Path<String>,
) -> ApiResult<Json<Vec<PrincipalView>>> {
    who.require_or_vault_admin(&tenant, &[Role::Admin, Role::Auditor])?;
    let rows =
        sqlx::query("SELECT id, name, roles, cert_sha256, signing_key FROM principals WHERE tenant = $1 ORDER BY name")
            .bind(&tenant)
            .fetch_all(&app.pool)
            .await?;
    let mut out = Vec::new();
    for r in rows {
        let roles: String = r.try_get("roles")?;
        out.push(PrincipalView {
            id: r.try_get("id")?,
            tenant: Some(tenant.clone()),
            name: r.try_get("name")?,
            roles: roles.split(',').filter_map(|s| s.parse().ok()).collect(),
            signing_key: r.try_get("signing_key")?,
            client_cert_sha256: r.try_get("cert_sha256")?,
        });
    }
    Ok(Json(out))
}

fn approvals(texts: &[String]) -> ApiResult<Vec<Approval>> {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Approval::from_json(t).map_err(|e| {
                ApiError::bad_hint(
                    "invalid_approval",
                    format!("approval {i}: {e}"),
                    "approvals are made by `coffre policy sign`",
                )
            })
        })
        .collect()
}

/// `PUT /v1/tenants/{tenant}/approvers`: install an approver set (logged; version 1 by an
/// administrator, later versions with M of N of the set in force).
pub async fn change_approvers(
    State(app): State<AppState>,
    who: Principal,
    Path(tenant): Path<String>,
    Body(req): Body<ChangeApprovers>,
) -> ApiResult<Json<Logged>> {
    who.require_or_vault_admin(&tenant, &[Role::Admin, Role::Approver])?;
    let set = ApproverSet::from_toml(&req.document).map_err(|e| {
        ApiError::bad_hint("invalid_approver_set", e.to_string(), "see `coffre policy check` for the format")
    })?;
    if set.tenant.as_str() != tenant {
        return Err(ApiError::bad("wrong_tenant", format!("the set is for tenant {}, not {tenant}", set.tenant)));
    }
    approvals(&req.approvals)?;
    let index = app
        .log
        .call(move |ledger, _| {
            let document = ledger.put_blob(req.document.as_bytes())?;
            let approvals =
                req.approvals.iter().map(|a| ledger.put_blob(a.as_bytes())).collect::<Result<Vec<_>, _>>()?;
            let at = ledger.next_at(now());
            let (index, _) = ledger.record_pending(&Entry::ApproverSetChanged {
                at,
                tenant,
                version: set.version.get(),
                digest: set.digest(),
                document,
                approvals,
            })?;
            Ok(index)
        })
        .await?;
    Ok(Json(Logged { log_index: index }))
}

/// `GET /v1/tenants/{tenant}/approvers`.
pub async fn get_approvers(
    State(app): State<AppState>,
    who: Principal,
    Path(tenant): Path<String>,
) -> ApiResult<Json<ApproverSetView>> {
    who.require(&tenant, &Role::ALL)?;
    app.log.read(|s| {
        let set = s.tenant(&tenant).and_then(|t| t.approvers.as_ref()).ok_or(ApiError::NotFound)?;
        Ok(Json(ApproverSetView {
            version: set.version.get(),
            threshold: set.threshold,
            approvers: set
                .approvers
                .iter()
                .map(|a| ApproverView { name: a.name.to_string(), key_id: a.key.key_id() })
                .collect(),
        }))
    })
}

/// `POST /v1/tenants/{tenant}/policies`: propose a version (logged).
pub async fn propose_policy(
    State(app): State<AppState>,
    who: Principal,
    Path(tenant): Path<String>,
    Body(req): Body<ProposePolicy>,
) -> ApiResult<(StatusCode, Json<PolicyView>)> {
    who.require(&tenant, &[Role::Approver, Role::Admin])?;
    let policy = Policy::from_toml(&req.document).map_err(|e| {
        ApiError::bad_hint("invalid_policy", e.to_string(), "check it first with `coffre policy check`")
    })?;
    if policy.tenant.as_str() != tenant {
        return Err(ApiError::bad("wrong_tenant", format!("the policy is for tenant {}, not {tenant}", policy.tenant)));
    }
    let proposer = who.name.clone();
    let reference = policy.reference();
    let version = policy_version(&reference);
    app.log
        .call(move |ledger, _| {
            let document = ledger.put_blob(req.document.as_bytes())?;
            let at = ledger.next_at(now());
            ledger.record_pending(&Entry::PolicyProposed { at, tenant, policy: version, document, proposer })?;
            Ok(())
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(PolicyView {
            id: reference.id,
            version: reference.version,
            digest: reference.digest,
            state: "proposed".into(),
            approvals: Vec::new(),
            description: coffre_policies::explain(&policy).join("\n"),
        }),
    ))
}

/// `GET /v1/tenants/{tenant}/policies`: proposed and active versions.
pub async fn list_policies(
    State(app): State<AppState>,
    who: Principal,
    Path(tenant): Path<String>,
) -> ApiResult<Json<Vec<PolicyView>>> {
    who.require(&tenant, &Role::ALL)?;
    let out = app.log.read(|s| {
        let t = s.tenant(&tenant).ok_or(ApiError::NotFound)?;
        let mut out = Vec::new();
        for a in &t.active {
            let p = a.policy();
            out.push(PolicyView {
                id: p.id.to_string(),
                version: p.version.get(),
                digest: p.digest(),
                state: "active".into(),
                approvals: a.approved_by().to_vec(),
                description: coffre_policies::explain(p).join("\n"),
            });
        }
        for ((pid, version), proposal) in &t.proposals {
            if out.iter().any(|v| v.id == *pid && v.version == *version) {
                continue;
            }
            let superseded =
                t.active.iter().any(|a| a.policy().id.as_str() == pid && a.policy().version.get() >= *version);
            out.push(PolicyView {
                id: pid.clone(),
                version: *version,
                digest: proposal.digest.clone(),
                state: if superseded { "superseded" } else { "proposed" }.into(),
                approvals: proposal.approvals.iter().map(|(k, _)| k.clone()).collect(),
                description: String::new(),
            });
        }
        Ok::<_, ApiError>(out)
    })?;
    Ok(Json(out))
}

/// `POST /v1/tenants/{tenant}/policies/{id}/{version}/approvals`: one approver's approval (logged).
pub async fn approve_policy(
    State(app): State<AppState>,
    who: Principal,
    Path((tenant, pid, version)): Path<(String, String, u64)>,
    Body(req): Body<ApprovePolicy>,
) -> ApiResult<Json<Logged>> {
    who.require(&tenant, &[Role::Approver])?;
    let approval = approvals(std::slice::from_ref(&req.approval))?.remove(0);
    let digest = app
        .log
        .read(|s| s.tenant(&tenant).and_then(|t| t.proposals.get(&(pid.clone(), version))).map(|p| p.digest.clone()))
        .ok_or(ApiError::NotFound)?;
    let policy = coffre_log::PolicyVersion { id: pid, version, digest };
    let approver = approval.approver.key_id();
    let index = app
        .log
        .call(move |ledger, _| {
            let blob = ledger.put_blob(req.approval.as_bytes())?;
            let at = ledger.next_at(now());
            let (index, _) =
                ledger.record_pending(&Entry::PolicyApproved { at, tenant, policy, approver, approval: blob })?;
            Ok(index)
        })
        .await?;
    Ok(Json(Logged { log_index: index }))
}

/// `POST /v1/tenants/{tenant}/policies/{id}/{version}/activate`: activate with the logged
/// approvals (refused below the threshold of the set in force).
pub async fn activate_policy(
    State(app): State<AppState>,
    who: Principal,
    Path((tenant, pid, version)): Path<(String, String, u64)>,
) -> ApiResult<Json<Logged>> {
    who.require(&tenant, &[Role::Approver, Role::Admin])?;
    let found = app.log.read(|s| {
        let t = s.tenant(&tenant)?;
        let p = t.proposals.get(&(pid.clone(), version))?;
        Some((p.clone(), t.approvers.as_ref().map(|a| a.version.get())))
    });
    let Some((proposal, Some(set_version))) = found else {
        return Err(ApiError::NotFound);
    };
    let policy = coffre_log::PolicyVersion { id: pid, version, digest: proposal.digest.clone() };
    let index = app
        .log
        .call(move |ledger, _| {
            let at = ledger.next_at(now());
            let (index, _) = ledger.record_pending(&Entry::PolicyActivated {
                at,
                tenant,
                policy,
                document: proposal.document,
                approvals: proposal.approvals.iter().map(|(_, d)| *d).collect(),
                approver_set: set_version,
            })?;
            Ok(index)
        })
        .await?;
    Ok(Json(Logged { log_index: index }))
}
