//! The OpenAPI 3.1 document served at `/v1/openapi.json`, generated from the wire types'
//! schemas (`coffre-api`'s `ToSchema` derives) and [`ROUTES`], the one table of operations. A test
//! sends a request to every operation of the table through the real router, so the document
//! cannot name a route the server does not have.

use std::sync::OnceLock;

use coffre_api::wire;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApiBuilder, PathsBuilder, Ref, Required};

/// One operation: method, path, summary, request body schema, success status and body schema.
#[derive(Debug)]
pub struct Route {
    /// `get`, `post` or `put`.
    pub method: &'static str,
    /// The path with `{parameters}`.
    pub path: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// Request body: a schema name, `sealed` (a sealed object), or none.
    pub request: Option<&'static str>,
    /// Success status.
    pub status: &'static str,
    /// Response body: a schema name, `text`, `bytes`, `sealed`, or none.
    pub response: Option<&'static str>,
}

const fn r(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    request: Option<&'static str>,
    status: &'static str,
    response: Option<&'static str>,
) -> Route {
    Route { method, path, summary, request, status, response }
}

/// Every operation of API version 1.
pub const ROUTES: &[Route] = &[
    r("get", "/healthz", "Liveness", None, "200", Some("Health")),
    r("get", "/readyz", "Readiness (database reachable)", None, "200", Some("Health")),
    r("get", "/metrics", "Prometheus metrics", None, "200", Some("text")),
    r("get", "/v1/openapi.json", "This document", None, "200", Some("json")),
    r(
        "post",
        "/v1/tenants",
        "Create a tenant and its first KEK (vault administrator)",
        Some("CreateTenant"),
        "201",
        Some("TenantView"),
    ),
    r("get", "/v1/tenants", "Tenants visible to the caller", None, "200", Some("TenantView[]")),
    r("get", "/v1/tenants/{tenant}", "A tenant and the KEK public key owners seal to", None, "200", Some("TenantView")),
    r(
        "put",
        "/v1/tenants/{tenant}/testing",
        "Mark a tenant for testing, or unmark it (vault administrator; development vaults only): the KBS sample TEE is served to such tenants alone",
        Some("MarkTesting"),
        "200",
        Some("Logged"),
    ),
    r(
        "post",
        "/v1/tenants/{tenant}/principals",
        "Create a principal; its token is shown once",
        Some("CreatePrincipal"),
        "201",
        Some("CreatedPrincipal"),
    ),
    r("get", "/v1/tenants/{tenant}/principals", "A tenant's principals", None, "200", Some("PrincipalView[]")),
    r(
        "post",
        "/v1/tenants/{tenant}/datasets/{dataset}/uploads",
        "Start a resumable upload of a large sealed object",
        Some("StartUpload"),
        "201",
        Some("UploadView"),
    ),
    r(
        "get",
        "/v1/tenants/{tenant}/datasets/{dataset}/uploads/{id}",
        "The parts of a resumable upload the vault holds",
        None,
        "200",
        Some("UploadView"),
    ),
    r(
        "delete",
        "/v1/tenants/{tenant}/datasets/{dataset}/uploads/{id}",
        "Abandon a resumable upload",
        None,
        "204",
        None,
    ),
    r(
        "put",
        "/v1/tenants/{tenant}/datasets/{dataset}/uploads/{id}/parts/{part}",
        "One part of a resumable upload (application/octet-stream; sent again, it replaces the earlier one)",
        None,
        "200",
        Some("UploadedPart"),
    ),
    r(
        "post",
        "/v1/tenants/{tenant}/datasets/{dataset}/uploads/{id}/complete",
        "Assemble a resumable upload and register it as the dataset's next version (as PUT …/objects)",
        None,
        "201",
        Some("ObjectView"),
    ),
    r(
        "post",
        "/v1/tenants/{tenant}/kek/rotate",
        "Start or resume a KEK rotation; rewraps one batch of data keys (call again while keys remain)",
        None,
        "200",
        Some("KekRotation"),
    ),
    r(
        "post",
        "/v1/tenants/{tenant}/shred",
        "Schedule the crypto-shredding of every key of the tenant after the waiting period",
        None,
        "200",
        Some("Shredding"),
    ),
    r(
        "delete",
        "/v1/tenants/{tenant}/shred",
        "Cancel the tenant's scheduled shredding (approvers)",
        None,
        "200",
        Some("Shredding"),
    ),
    r(
        "post",
        "/v1/tenants/{tenant}/datasets/{dataset}/shred",
        "Schedule the crypto-shredding of every version of a dataset after the waiting period",
        None,
        "200",
        Some("Shredding"),
    ),
    r(
        "delete",
        "/v1/tenants/{tenant}/datasets/{dataset}/shred",
        "Cancel a dataset's scheduled shredding (approvers)",
        None,
        "200",
        Some("Shredding"),
    ),
    r(
        "put",
        "/v1/tenants/{tenant}/approvers",
        "Install an approver set (M of N of the current set)",
        Some("ChangeApprovers"),
        "200",
        Some("Logged"),
    ),
    r("get", "/v1/tenants/{tenant}/approvers", "The approver set in force", None, "200", Some("ApproverSetView")),
    r(
        "post",
        "/v1/tenants/{tenant}/policies",
        "Propose a policy version",
        Some("ProposePolicy"),
        "201",
        Some("PolicyView"),
    ),
    r("get", "/v1/tenants/{tenant}/policies", "Proposed and active policy versions", None, "200", Some("PolicyView[]")),
    r(
        "post",
        "/v1/tenants/{tenant}/policies/{id}/{version}/approvals",
        "Add an approval",
        Some("ApprovePolicy"),
        "200",
        Some("Logged"),
    ),
    r(
        "post",
        "/v1/tenants/{tenant}/policies/{id}/{version}/activate",
        "Activate with the logged approvals",
        None,
        "200",
        Some("Logged"),
    ),
    r(
        "post",
        "/v1/tenants/{tenant}/datasets",
        "Register a dataset with its labels",
        Some("RegisterDataset"),
        "201",
        Some("DatasetView"),
    ),
    r("get", "/v1/tenants/{tenant}/datasets", "Datasets", None, "200", Some("DatasetView[]")),
    r("get", "/v1/tenants/{tenant}/datasets/{dataset}", "A dataset and its versions", None, "200", Some("DatasetView")),
    r(
        "put",
        "/v1/tenants/{tenant}/datasets/{dataset}/objects",
        "Upload a sealed object as the next version",
        Some("sealed"),
        "201",
        Some("ObjectView"),
    ),
    r(
        "get",
        "/v1/tenants/{tenant}/datasets/{dataset}/versions/{version}/object",
        "Download a sealed object",
        None,
        "200",
        Some("sealed"),
    ),
    r("post", "/v1/tenants/{tenant}/jobs", "Submit a signed job manifest", Some("SignedJob"), "201", Some("JobView")),
    r("get", "/v1/tenants/{tenant}/jobs", "Jobs", None, "200", Some("JobView[]")),
    r("get", "/v1/tenants/{tenant}/jobs/{job}", "A job", None, "200", Some("JobView")),
    r(
        "get",
        "/v1/tenants/{tenant}/models",
        "Base models in the tenant's model store",
        None,
        "200",
        Some("ModelView[]"),
    ),
    r(
        "put",
        "/v1/tenants/{tenant}/models/{digest}",
        "Store a base model (?kind=file|dir; a dir as a tar stream); the vault recomputes its digest",
        Some("bytes"),
        "201",
        Some("ModelView"),
    ),
    r("get", "/v1/tenants/{tenant}/models/{digest}", "A stored base model", None, "200", Some("ModelView")),
    r("get", "/v1/tenants/{tenant}/models/{digest}/content", "Download a base model", None, "200", Some("bytes")),
    r("get", "/v1/tenants/{tenant}/artifacts", "Registered artifacts", None, "200", Some("ArtifactView[]")),
    r(
        "put",
        "/v1/tenants/{tenant}/artifacts/{model}/{version}",
        "Upload and register a sealed artifact with its provenance",
        Some("sealed"),
        "201",
        Some("ArtifactView"),
    ),
    r(
        "get",
        "/v1/tenants/{tenant}/artifacts/{model}/{version}/object",
        "Download a sealed artifact",
        None,
        "200",
        Some("sealed"),
    ),
    r("get", "/v1/tenants/{tenant}/denials/{index}", "A denial's failed checks", None, "200", Some("DenialView")),
    r(
        "post",
        "/v1/challenge",
        "A single-use challenge for a release",
        Some("ChallengeRequest"),
        "200",
        Some("Challenge"),
    ),
    r(
        "post",
        "/v1/release",
        "Release a job's data keys to an attested worker",
        Some("ReleaseRequest"),
        "200",
        Some("ReleaseResponse"),
    ),
    r("get", "/v1/log", "The log's size, checkpoint and key", None, "200", Some("LogInfo")),
    r("get", "/v1/log/entries", "Entries and leaf hashes (start, end)", None, "200", Some("LogEntries")),
    r("get", "/v1/log/blobs/{digest}", "A blob of the log", None, "200", Some("bytes")),
    r("get", "/v1/log/checkpoints/{size}", "A signed checkpoint", None, "200", Some("text")),
];

fn content(kind: &str) -> utoipa::openapi::Content {
    match kind {
        "text" => ContentBuilder::new().build(),
        "bytes" | "sealed" | "json" => ContentBuilder::new().build(),
        name if name.ends_with("[]") => ContentBuilder::new()
            .schema(Some(
                utoipa::openapi::schema::ArrayBuilder::new().items(Ref::from_schema_name(&name[..name.len() - 2])),
            ))
            .build(),
        name => ContentBuilder::new().schema(Some(Ref::from_schema_name(name))).build(),
    }
}

fn media(kind: &str) -> &'static str {
    match kind {
        "text" => "text/plain",
        "bytes" => "application/octet-stream",
        "sealed" => "application/vnd.coffre.sealed",
        _ => "application/json",
    }
}

fn build() -> String {
    let mut paths = PathsBuilder::new();
    for route in ROUTES {
        let mut op = OperationBuilder::new().summary(Some(route.summary)).operation_id(Some(format!(
            "{}{}",
            route.method,
            route.path.replace(['/', '{', '}', '.'], "_")
        )));
        for segment in route.path.split('/').filter(|s| s.starts_with('{')) {
            op = op.parameter(
                ParameterBuilder::new()
                    .name(segment.trim_matches(['{', '}']))
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True),
            );
        }
        if let Some(req) = route.request {
            op = op.request_body(Some(
                RequestBodyBuilder::new().content(media(req), content(req)).required(Some(Required::True)).build(),
            ));
        }
        let ok = match route.response {
            Some(kind) => ResponseBuilder::new().description("success").content(media(kind), content(kind)).build(),
            None => ResponseBuilder::new().description("success").build(),
        };
        op = op.response(route.status, ok);
        let problem = ResponseBuilder::new()
            .description("an RFC 7807 problem")
            .content("application/problem+json", content("Problem"))
            .build();
        for status in ["400", "401", "403", "404", "409", "422", "429", "503"] {
            op = op.response(status, problem.clone());
        }
        if !matches!(route.path, "/healthz" | "/readyz" | "/metrics" | "/v1/openapi.json") {
            op = op.security(SecurityRequirement::new("bearer", Vec::<String>::new()));
        }
        let method = match route.method {
            "post" => HttpMethod::Post,
            "put" => HttpMethod::Put,
            "delete" => HttpMethod::Delete,
            _ => HttpMethod::Get,
        };
        paths = paths.path(route.path, PathItem::new(method, op.build()));
    }
    let components = ComponentsBuilder::new()
        .schema_from::<wire::Problem>()
        .schema_from::<wire::FailedCheckView>()
        .schema_from::<wire::Role>()
        .schema_from::<wire::CreateTenant>()
        .schema_from::<wire::TenantView>()
        .schema_from::<wire::KekView>()
        .schema_from::<wire::KekRotation>()
        .schema_from::<wire::StartUpload>()
        .schema_from::<wire::UploadedPart>()
        .schema_from::<wire::UploadView>()
        .schema_from::<wire::Shredding>()
        .schema_from::<wire::CreatePrincipal>()
        .schema_from::<wire::PrincipalView>()
        .schema_from::<wire::CreatedPrincipal>()
        .schema_from::<wire::ChangeApprovers>()
        .schema_from::<wire::MarkTesting>()
        .schema_from::<wire::ApproverSetView>()
        .schema_from::<wire::ApproverView>()
        .schema_from::<wire::ProposePolicy>()
        .schema_from::<wire::ApprovePolicy>()
        .schema_from::<wire::PolicyView>()
        .schema_from::<wire::RegisterDataset>()
        .schema_from::<wire::DatasetView>()
        .schema_from::<wire::ObjectView>()
        .schema_from::<wire::JobView>()
        .schema_from::<wire::ChallengeRequest>()
        .schema_from::<wire::Challenge>()
        .schema_from::<wire::ReleaseRequest>()
        .schema_from::<wire::WrappedKeyView>()
        .schema_from::<wire::ReleaseResponse>()
        .schema_from::<wire::DenialView>()
        .schema_from::<wire::ArtifactView>()
        .schema_from::<wire::ModelView>()
        .schema_from::<wire::Logged>()
        .schema_from::<wire::LogInfo>()
        .schema_from::<wire::LogEntries>()
        .schema_from::<wire::Health>()
        .schema(
            "SignedJob",
            utoipa::openapi::ObjectBuilder::new().description(Some(
                "coffre-signed-job/v1: {format, manifest (base64 of the canonical manifest), signer, signature}",
            )),
        )
        .security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()))
        .build();
    let doc = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Coffre vault API")
                .version("1")
                .description(Some(
                    "The key broker of Coffre: tenants, datasets, policies, jobs, attested key release, artifacts and \
                     the transparency log. Errors are RFC 7807 problem documents with stable codes.",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components))
        .build();
    doc.to_pretty_json().unwrap_or_default()
}

/// The document (built once).
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(build)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn every_schema_a_route_names_is_in_the_document() {
        let doc: serde_json::Value = serde_json::from_str(super::document()).unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for route in super::ROUTES {
            for kind in [route.request, route.response].into_iter().flatten() {
                let name = kind.trim_end_matches("[]");
                if !["text", "bytes", "sealed", "json"].contains(&name) {
                    assert!(schemas.contains_key(name), "{} {} names {name}", route.method, route.path);
                }
            }
            assert!(doc["paths"][route.path][route.method].is_object(), "{} {}", route.method, route.path);
        }
    }
}
