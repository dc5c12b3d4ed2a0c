//! The log state the vault and the auditor share, attacked: every red-team finding against the
//! approval, key-binding, replay, label and audit logic, as a log an attacker (or a dishonest
//! operator with write access to the store and the log key) could write, and each refused both
//! by `LogState::check` (so the vault never writes it) and by the audit (so it never passes).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

use std::sync::OnceLock;

use coffre_api::job::JobManifest;
use coffre_attestation::composite::CompositeVerifier;
use coffre_attestation::nvidia::Arch;
use coffre_attestation::simulated::{SimulatedGpu, SimulatedPlatform, SimulatedTee};
use coffre_broker::audit::{Audience, Report, audit};
use coffre_broker::development::{self, TENANT};
use coffre_broker::state::policy_version;
use coffre_broker::{Decided, Justification, Ledger, LedgerError, LogState, appraise};
use coffre_log::{BlobStore, Digest, Entry, EntryStore, Log, MemoryStore, NoteSigner};
use coffre_policies::{ApproverSecretKey, ApproverSet, Policy, Subject};
use coffre_seal::RecipientSecretKey;

const NOW: u64 = 1_796_000_000; // 2026-11-30
const DAY: u64 = 86_400;
const DEBUG_OFF: u64 = 0x3_0000;
const DEBUG_ON: u64 = 0xb_0000;

struct Hardware {
    tee: SimulatedTee,
    gpus: Vec<SimulatedGpu>,
}

fn hardware() -> &'static Hardware {
    static HW: OnceLock<Hardware> = OnceLock::new();
    HW.get_or_init(|| Hardware {
        tee: SimulatedTee::generate(SimulatedPlatform::default()).unwrap(),
        gpus: SimulatedGpu::generate_machine(&[Arch::Hopper, Arch::Hopper]).unwrap(),
    })
}

fn verifier() -> CompositeVerifier {
    let hw = hardware();
    CompositeVerifier::new()
        .dangerous_accept_simulated_roots(hw.tee.ark_der(), hw.tee.ask_der(), hw.gpus[0].root_der())
        .unwrap()
}

/// A development vault with one tenant, dataset, object and job.
struct Vault {
    ledger: Ledger<MemoryStore>,
    setup: development::Setup,
    signer: NoteSigner,
    /// The signing key of the last release attempt's worker.
    worker: Option<coffre_seal::SigningKey>,
}

fn vault() -> Vault {
    let mut ledger = Ledger::open(MemoryStore::new()).unwrap();
    let output = RecipientSecretKey::generate(&mut coffre_seal::SystemRandom).unwrap();
    let setup =
        development::bootstrap(&mut ledger, NOW, "messages", Digest::of(b"object"), "dek-messages", output.public())
            .unwrap();
    Vault { ledger, setup, signer: NoteSigner::generate("vault.test/log").unwrap(), worker: None }
}

impl Vault {
    fn manifest(&self) -> Vec<u8> {
        self.setup.manifest.to_bytes()
    }

    /// A worker's release attempt with fresh keys and `nonce`, evidence verified at `verified`.
    fn release_at(&mut self, at: u64, verified: u64, nonce: [u8; 32], policy_bits: u64) -> Decided {
        let hw = hardware();
        let (_, signing, keys) = development::worker_keys().unwrap();
        self.worker = Some(signing);
        let keys = keys.to_bytes();
        let manifest = self.manifest();
        let rd = coffre_api::report_data(&nonce, &keys, &manifest);
        let evidence = development::evidence(&hw.tee, &hw.gpus, rd, policy_bits).unwrap();
        let appraised = appraise(&verifier(), &evidence, nonce, &keys, &manifest, verified);
        let job = self.setup.job.clone();
        self.ledger.decide(at, TENANT, &job, &evidence, &appraised, &keys).unwrap()
    }

    fn release(&mut self, nonce: u8, policy_bits: u64) -> Decided {
        self.release_at(NOW, NOW, [nonce; 32], policy_bits)
    }

    /// The log as a dishonest operator holds it: entries appended with no rule checked.
    fn raw(&self) -> Log<MemoryStore> {
        Log::open(self.ledger.log().store().clone()).unwrap()
    }

    fn entries(&self) -> Vec<Entry> {
        (0..self.ledger.log().size()).map(|i| self.ledger.log().entry(i).unwrap()).collect()
    }
}

fn audit_of(log: &mut Log<MemoryStore>, signer: &NoteSigner) -> Report {
    log.sign_checkpoint(signer).unwrap();
    audit(log.store(), signer.verifier(), None, &verifier(), Audience::Development).0
}

fn problems_at(r: &Report, index: u64) -> Vec<String> {
    r.problems.iter().filter(|p| p.entry == Some(index)).map(|p| p.reason.clone()).collect()
}

fn has(r: &Report, index: u64, needle: &str) -> bool {
    problems_at(r, index).iter().any(|p| p.contains(needle))
}

fn released(d: Decided) -> Box<coffre_broker::ReleaseToken> {
    match d {
        Decided::Released(t) => t,
        Decided::Denied(d) => panic!("denied: {:?}", d.failed),
    }
}

fn check(state: &LogState, store: &MemoryStore, entry: &Entry) -> Result<(), Vec<String>> {
    state.check(entry, &mut coffre_broker::ledger::StoreBlobs(store), &Justification::Recorded).map(drop)
}

#[test]
fn the_vault_writes_only_what_the_audit_accepts() {
    let mut v = vault();
    let token = released(v.release(1, DEBUG_OFF));
    assert_eq!(token.key_ids(), ["dek-messages"]);
    let Decided::Denied(d) = v.release(2, DEBUG_ON) else { panic!("a debug VM was released to") };
    assert!(d.failed.iter().any(|f| f.name == "snp.policy.debug"), "{:?}", d.failed);
    v.ledger.sign_checkpoint(&v.signer).unwrap();
    let (r, _) = audit(v.ledger.log().store(), v.signer.verifier(), None, &verifier(), Audience::Development);
    assert!(r.ok(), "{:?}", r.problems);
    assert_eq!((r.releases, r.denials, r.entries_audited), (1, 1, 9));
    // The same log in a production audit: development mode is a discrepancy, not a footnote.
    let (r, _) = audit(v.ledger.log().store(), v.signer.verifier(), None, &verifier(), Audience::Production);
    assert!(has(&r, 0, "development mode switched ON"), "{:?}", r.problems);
}

/// Finding 1 (critical): an approver set v2 holding only an attacker's key, installed with
/// `approvals: []`, then a debug-allowing policy signed by that key, then a release to a debug
/// VM — the whole log audited OK.
#[test]
fn attack_approver_set_replaced_with_zero_approvals_then_debug_release() {
    let mut v = vault();
    let attacker = ApproverSecretKey::generate().unwrap();
    let set = format!(
        "format = \"coffre-approvers/v1\"\ntenant = \"{TENANT}\"\nversion = 2\nthreshold = 1\n\n\
         [[approvers]]\nname = \"mallory\"\nkey = \"{}\"\n",
        attacker.public()
    );
    let parsed = ApproverSet::from_toml(&set).unwrap();
    let mut log = v.raw();
    let doc = log.store_mut().put_blob(set.as_bytes()).unwrap();
    v.ledger.put_blob(set.as_bytes()).unwrap();
    let change = Entry::ApproverSetChanged {
        at: NOW,
        tenant: TENANT.into(),
        version: 2,
        digest: parsed.digest(),
        document: doc,
        approvals: vec![],
    };
    // The vault refuses to write it.
    let refused = v.ledger.record(&change).unwrap_err();
    assert!(matches!(&refused, LedgerError::Refused(r) if r[0].contains("not approved")), "{refused}");
    // Nor does a non-member's approval or a member's approval of another version count.
    let own = attacker.approve(&Subject::of_set(&parsed)).unwrap();
    let mut v3 = Subject::of_set(&parsed);
    v3.version = 3;
    let officer_other_version = v.setup.officer.approve(&v3).unwrap();
    for approval in [own, officer_other_version] {
        let a = log.store_mut().put_blob(approval.to_json().as_bytes()).unwrap();
        let mut with = change.clone();
        if let Entry::ApproverSetChanged { approvals, .. } = &mut with {
            *approvals = vec![a];
        }
        assert!(check(v.ledger.state(), log.store(), &with).is_err());
    }

    // The attacker writes the log anyway: set v2, a debug-allowing policy, a debug release.
    let set_index = log.append(&change).unwrap();
    let text = development::DEVELOPMENT_POLICY
        .replace("id = \"development\"", "id = \"open-door\"")
        .replace("forbidden_policy_bits = [\"debug\"]", "forbidden_policy_bits = []");
    let policy = Policy::from_toml(&text).unwrap();
    let approval = attacker.approve(&Subject::of_policy(&policy)).unwrap();
    let document = log.store_mut().put_blob(text.as_bytes()).unwrap();
    let approval = log.store_mut().put_blob(approval.to_json().as_bytes()).unwrap();
    let policy_index = log
        .append(&Entry::PolicyActivated {
            at: NOW,
            tenant: TENANT.into(),
            policy: policy_version(&policy.reference()),
            document,
            approvals: vec![approval],
            approver_set: 2,
        })
        .unwrap();
    let r = audit_of(&mut log, &v.signer);
    assert!(has(&r, set_index, "approver set change not approved"), "{:?}", r.problems);
    assert!(has(&r, policy_index, "but set 1 is in force"), "{:?}", r.problems);
}

/// Finding 2 (high): a release for tenant A naming tenant B's key audited OK.
#[test]
fn attack_release_names_another_tenants_key() {
    let mut v = vault();
    for e in [
        Entry::TenantCreated { at: NOW, tenant: "other-bank".into(), name: "Other".into() },
        Entry::DatasetRegistered { at: NOW, tenant: "other-bank".into(), dataset: "payroll".into(), labels: vec![] },
        Entry::ObjectRegistered {
            at: NOW,
            tenant: "other-bank".into(),
            dataset: "payroll".into(),
            version: 1,
            object_id: "00".repeat(16),
            digest: Digest::of(b"payroll"),
            size: 1,
            key_id: "dek-payroll".into(),
            signer: None,
        },
    ] {
        v.ledger.record(&e).unwrap();
    }
    let token = released(v.release(1, DEBUG_OFF));
    // The vault takes key ids from its registry, never from the request.
    assert_eq!(token.key_ids(), ["dek-messages"]);
    let entries = v.entries();
    let index = entries.len() - 1;
    let mut forged = entries[index].clone();
    let Entry::KeyReleased { key_ids, .. } = &mut forged else { panic!("the last entry is the release") };
    *key_ids = vec!["dek-payroll".into()];
    // What the vault's rules say of it, in the state before the release.
    let mut before = LogState::new();
    let store = v.ledger.log().store();
    for e in &entries[..index] {
        let t = before.check(e, &mut coffre_broker::ledger::StoreBlobs(store), &Justification::Recorded).unwrap();
        before.apply(t).unwrap();
    }
    assert!(check(&before, store, &forged).unwrap_err().iter().any(|r| r.contains("of tenant other-bank")));
    // A dishonest operator writes it in the release's place and signs.
    let mut rewritten = store.clone();
    rewritten.rewrite_entry(index, forged.to_bytes());
    let mut log = Log::open(rewritten).unwrap();
    let r = audit_of(&mut log, &v.signer);
    assert!(has(&r, index as u64, "released key dek-payroll of tenant other-bank"), "{:?}", r.problems);
}

/// Finding 3 (high): the same bundle replayed 30 days and a year later audited OK.
#[test]
fn attack_release_bundle_replayed_30_days_and_a_year_later() {
    let mut v = vault();
    let _ = released(v.release(1, DEBUG_OFF));
    let release = v.entries().pop().unwrap();
    let mut log = v.raw();
    let mut later = Vec::new();
    for days in [30, 365] {
        let mut replayed = release.clone();
        if let Entry::KeyReleased { at, .. } = &mut replayed {
            *at = NOW + days * DAY;
        }
        assert!(check(v.ledger.state(), log.store(), &replayed).unwrap_err().iter().any(|r| r.contains("a replay")));
        later.push(log.append(&replayed).unwrap());
    }
    let r = audit_of(&mut log, &v.signer);
    for i in later {
        assert!(has(&r, i, "a replay"), "{:?}", r.problems);
        assert!(has(&r, i, "evidence.fresh"), "{:?}", r.problems);
    }
}

/// Finding 3 (high): evidence verified long before the entry, under a fresh nonce, audited OK
/// (policies were evaluated at the bundle's `verified_at`); and the vault itself refuses it.
#[test]
fn attack_stale_evidence_under_a_fresh_nonce() {
    let mut v = vault();
    // Within the skew, it passes.
    let _ = released(v.release_at(NOW + 120, NOW, [6; 32], DEBUG_OFF));
    let Decided::Denied(d) = v.release_at(NOW + 31 * DAY, NOW, [5; 32], DEBUG_OFF) else {
        panic!("evidence verified a month earlier was accepted")
    };
    assert!(d.failed.iter().any(|f| f.name == "evidence.fresh"), "{:?}", d.failed);
}

/// Finding 3 (high): an entry dated 1970 after 2026 entries audited OK.
#[test]
fn attack_entry_dated_1970_after_2026_entries() {
    let mut v = vault();
    let back = Entry::ConfigChanged { at: 0, setting: "development_mode".into(), old: "on".into(), new: "off".into() };
    assert!(matches!(v.ledger.record(&back), Err(LedgerError::Refused(r)) if r[0].contains("never goes backwards")));
    let mut log = v.raw();
    let index = log.append(&back).unwrap();
    let r = audit_of(&mut log, &v.signer);
    assert!(has(&r, index, "never goes backwards"), "{:?}", r.problems);
    // The vault's own clock stepping back gives the entry the last entry's time instead.
    assert_eq!(v.ledger.next_at(NOW - 3600), NOW);
}

/// Finding 5 (medium): the requester's labels chose the policies (claiming another label made
/// `bank-strict` drop out). Labels now come from the dataset's logged registration: a job
/// manifest has no way to state them, and a label-scoped policy applies whatever the worker asks.
#[test]
fn attack_requester_claims_other_labels_to_escape_a_policy() {
    let mut v = vault();
    let text = development::DEVELOPMENT_POLICY
        .replace("id = \"development\"", "id = \"pii-guard\"")
        .replace("datasets = [\"*\"]", "dataset_labels = [\"customer-messages\"]")
        + "\n[job]\nmax_steps = 1\n";
    let policy = Policy::from_toml(&text).unwrap();
    let approval = v.setup.officer.approve(&Subject::of_policy(&policy)).unwrap();
    let document = v.ledger.put_blob(text.as_bytes()).unwrap();
    let approval = v.ledger.put_blob(approval.to_json().as_bytes()).unwrap();
    v.ledger
        .record(&Entry::PolicyActivated {
            at: NOW,
            tenant: TENANT.into(),
            policy: policy_version(&policy.reference()),
            document,
            approvals: vec![approval],
            approver_set: 1,
        })
        .unwrap();
    let Decided::Denied(d) = v.release(1, DEBUG_OFF) else { panic!("the label-scoped policy did not apply") };
    assert!(d.failed.iter().any(|f| f.policy == "pii-guard@1" && f.name == "job.steps"), "{:?}", d.failed);
    // The manifest format itself refuses a labels member.
    let mut json: serde_json::Value = serde_json::from_slice(&v.manifest()).unwrap();
    json["dataset_labels"] = serde_json::json!(["public"]);
    assert!(JobManifest::from_bytes(&serde_json::to_vec(&json).unwrap()).is_err());
}

/// Finding 7: `PolicyApproved` signatures were never checked.
#[test]
fn attack_policy_approval_entry_with_a_forged_signature() {
    let v = vault();
    let policy = Policy::from_toml(development::DEVELOPMENT_POLICY).unwrap();
    let mut approval = v.setup.officer.approve(&Subject::of_policy(&policy)).unwrap();
    approval.signature = approval.signature.chars().rev().collect();
    let mut log = v.raw();
    let blob = log.store_mut().put_blob(approval.to_json().as_bytes()).unwrap();
    let entry = Entry::PolicyApproved {
        at: NOW,
        tenant: TENANT.into(),
        policy: policy_version(&policy.reference()),
        approver: v.setup.officer.public().key_id(),
        approval: blob,
    };
    assert!(check(v.ledger.state(), log.store(), &entry).is_err());
    let index = log.append(&entry).unwrap();
    let r = audit_of(&mut log, &v.signer);
    assert!(has(&r, index, "the signature does not verify"), "{:?}", r.problems);
}

/// A DSSE provenance for `artifact` under `release` of the set-up job, signed by `key`.
fn provenance(
    v: &Vault,
    tenant: &str,
    release: u64,
    artifact: &Digest,
    key: &coffre_seal::SigningKey,
    version: u64,
) -> Vec<u8> {
    use coffre_api::provenance::*;
    let statement = Statement {
        statement_type: STATEMENT_TYPE.into(),
        subject: vec![Subject {
            name: format!("fraud-lora-v{version}.coffre"),
            digest: [("sha256".to_owned(), artifact.hex())].into_iter().collect(),
        }],
        predicate_type: PREDICATE_TYPE.into(),
        predicate: Predicate {
            tenant: tenant.into(),
            job: v.setup.job.clone(),
            release,
            policies: vec!["development@1".into()],
            datasets: Default::default(),
            base_model: None,
            trainer: "coffre-trainer".into(),
            trainer_version: "0.1.0".into(),
            trainer_measurement: None,
            recipe: v.setup.manifest.recipe.clone(),
            privacy: None,
            final_loss: None,
            held_out_loss: None,
            evidence_bundle: String::new(),
        },
    };
    Envelope::sign(INTOTO_PAYLOAD_TYPE, &serde_json::to_vec(&statement).unwrap(), key).unwrap().to_bytes()
}

/// Finding 7: artifacts were not tied to the release's tenant (or job).
#[test]
fn attack_artifact_registered_under_another_tenants_release() {
    let mut v = vault();
    let release = released(v.release(1, DEBUG_OFF)).index();
    let worker = v.worker.take().unwrap();
    v.ledger.record(&Entry::TenantCreated { at: NOW, tenant: "other-bank".into(), name: "Other".into() }).unwrap();
    let model = Digest::of(b"model");
    let job = v.setup.job.clone();
    let artifact = |tenant: &str, release: u64, version: u64, provenance: Digest| Entry::ArtifactRegistered {
        at: NOW,
        tenant: tenant.into(),
        job: job.clone(),
        model: "fraud-lora".into(),
        version,
        artifact: model,
        provenance,
        release,
    };
    let mut log = v.raw();
    let theirs = log.store_mut().put_blob(&provenance(&v, "other-bank", release, &model, &worker, 1)).unwrap();
    let foreign = artifact("other-bank", release, 1, theirs);
    assert!(check(v.ledger.state(), log.store(), &foreign).is_err());
    let index = log.append(&foreign).unwrap();
    let r = audit_of(&mut log, &v.signer);
    assert!(has(&r, index, "not other-bank's job"), "{:?}", r.problems);
    // Versions only increase (each registration under a release of its own: one per release).
    let ours = v.ledger.put_blob(&provenance(&v, TENANT, release, &model, &worker, 2)).unwrap();
    v.ledger.record(&artifact(TENANT, release, 2, ours)).unwrap();
    let second = released(v.release(2, DEBUG_OFF)).index();
    let worker2 = v.worker.take().unwrap();
    let older = v.ledger.put_blob(&provenance(&v, TENANT, second, &model, &worker2, 1)).unwrap();
    let refused = v.ledger.record(&artifact(TENANT, second, 1, older)).unwrap_err();
    assert!(refused.to_string().contains("does not follow"), "{refused}");
    // The same envelope under another version names the wrong one.
    let v2 = v.ledger.put_blob(&provenance(&v, TENANT, second, &model, &worker2, 2)).unwrap();
    let refused = v.ledger.record(&artifact(TENANT, second, 3, v2)).unwrap_err();
    assert!(refused.to_string().contains("names fraud-lora-v2.coffre"), "{refused}");
}

/// The audit did not check an artifact's provenance: an operator could register any file as a
/// release's model with a provenance nobody attested.
#[test]
fn attack_artifact_registered_with_a_provenance_the_released_worker_never_signed() {
    let mut v = vault();
    let release = released(v.release(1, DEBUG_OFF)).index();
    let worker = v.worker.take().unwrap();
    let model = Digest::of(b"model");
    let stranger = coffre_seal::SigningKey::generate().unwrap();
    let entry = |provenance: Digest, artifact: Digest| Entry::ArtifactRegistered {
        at: NOW,
        tenant: TENANT.into(),
        job: v.setup.job.clone(),
        model: "fraud-lora".into(),
        version: 1,
        artifact,
        provenance,
        release,
    };
    let mut log = v.raw();
    let forged = log.store_mut().put_blob(&provenance(&v, TENANT, release, &model, &stranger, 1)).unwrap();
    let honest = log.store_mut().put_blob(&provenance(&v, TENANT, release, &model, &worker, 1)).unwrap();
    let cases = [
        (entry(forged, model), "not by the key the release bound"),
        (entry(honest, Digest::of(b"another model")), "subject is not the artifact"),
        (entry(Digest::of(b"no such blob"), model), ""),
    ];
    for (e, reason) in &cases {
        let refused = check(v.ledger.state(), log.store(), e).unwrap_err();
        assert!(refused.iter().any(|r| r.contains(reason)), "{refused:?}");
    }
    let index = log.append(&cases[0].0).unwrap();
    let r = audit_of(&mut log, &v.signer);
    assert!(has(&r, index, "not by the key the release bound"), "{:?}", r.problems);
    // The worker's own provenance for that artifact is accepted.
    let ours = v.ledger.put_blob(&provenance(&v, TENANT, release, &model, &worker, 1)).unwrap();
    v.ledger.record(&entry(ours, model)).unwrap();
}

/// One release, one model: a second artifact registered under a release that already registered
/// one (a worker that keeps its attested key after training and signs other "models") is
/// refused by the vault and by the audit.
#[test]
fn attack_two_artifacts_registered_under_one_release() {
    let mut v = vault();
    let release = released(v.release(1, DEBUG_OFF)).index();
    let worker = v.worker.take().unwrap();
    let entry = |provenance: Digest, artifact: Digest, version: u64| Entry::ArtifactRegistered {
        at: NOW,
        tenant: TENANT.into(),
        job: v.setup.job.clone(),
        model: "fraud-lora".into(),
        version,
        artifact,
        provenance,
        release,
    };
    let (first, second) = (Digest::of(b"model"), Digest::of(b"another model"));
    let p1 = v.ledger.put_blob(&provenance(&v, TENANT, release, &first, &worker, 1)).unwrap();
    v.ledger.record(&entry(p1, first, 1)).unwrap();
    let p2 = v.ledger.put_blob(&provenance(&v, TENANT, release, &second, &worker, 2)).unwrap();
    let refused = v.ledger.record(&entry(p2, second, 2)).unwrap_err();
    assert!(refused.to_string().contains("already registered its artifact (fraud-lora v1)"), "{refused}");
    let mut log = v.raw();
    let index = log.append(&entry(p2, second, 2)).unwrap();
    let r = audit_of(&mut log, &v.signer);
    assert!(has(&r, index, "already registered its artifact"), "{:?}", r.problems);
}

/// The recorder and the audit disagreed: the recorder re-activated an older approved version.
#[test]
fn attack_older_policy_version_reactivated() {
    let mut v = vault();
    let entries = v.entries();
    let activation = entries.iter().find(|e| matches!(e, Entry::PolicyActivated { .. })).unwrap().clone();
    let refused = v.ledger.record(&activation).unwrap_err();
    assert!(refused.to_string().contains("does not follow the active version"), "{refused}");
}

#[test]
fn unsigned_entries_and_unreadable_checkpoints_fail_the_audit() {
    let mut v = vault();
    v.ledger.sign_checkpoint(&v.signer).unwrap();
    let mut log = v.raw();
    log.append(&Entry::ConfigChanged {
        at: NOW,
        setting: "development_mode".into(),
        old: "on".into(),
        new: "off".into(),
    })
    .unwrap();
    let (r, _) = audit(log.store(), v.signer.verifier(), None, &verifier(), Audience::Development);
    assert!(r.problems.iter().any(|p| p.reason.contains("covered by no signature")), "{:?}", r.problems);
    // An earlier checkpoint that does not verify is reported, not skipped.
    log.sign_checkpoint(&v.signer).unwrap();
    let mut store = log.store().clone();
    store.put_checkpoint(3, "not a checkpoint").unwrap();
    let latest = log.store().latest_checkpoint().unwrap().unwrap();
    store.put_checkpoint(log.size(), &latest).unwrap();
    let (r, _) = audit(&store, v.signer.verifier(), None, &verifier(), Audience::Development);
    assert!(r.problems.iter().any(|p| p.reason.contains("checkpoint of size 3")), "{:?}", r.problems);
}

/// Crypto-shredding in the shared state machine: from the request on, the vault denies the
/// release (naming the shredding), an operator who logs one anyway fails the audit, and a key
/// destroyed before its waiting period ends fails it too.
#[test]
fn attack_release_logged_after_a_shredding_request() {
    let mut v = vault();
    let shred = Entry::ShreddingScheduled {
        at: NOW,
        tenant: TENANT.into(),
        key_id: "dek-messages".into(),
        not_before: NOW + 7 * 86_400,
    };
    // The vault itself: denied, every reason named.
    v.ledger.record(&shred).unwrap();
    let Decided::Denied(d) = v.release(2, DEBUG_OFF) else { panic!("released after a shredding request") };
    assert!(d.failed.iter().any(|f| f.actual.contains("shredding request")), "{:?}", d.failed);
    // Once due, it can no longer be cancelled (the destruction may have begun).
    let late = Entry::ShreddingCancelled { at: NOW + 7 * 86_400, tenant: TENANT.into(), key_id: "dek-messages".into() };
    assert!(
        check(v.ledger.state(), v.ledger.log().store(), &late).unwrap_err().iter().any(|r| r.contains("no longer"))
    );
    // Nothing new is stored in a dataset being shredded.
    let upload = Entry::ObjectRegistered {
        at: NOW,
        tenant: TENANT.into(),
        dataset: "messages".into(),
        version: 2,
        object_id: "11".repeat(16),
        digest: Digest::of(b"v2"),
        size: 2,
        key_id: "dek-messages-2".into(),
        signer: None,
    };
    assert!(v.ledger.record(&upload).is_err());
    // Destroyed before the waiting period ended: a discrepancy. (First: a store's clones share
    // their entries, and the forgery below rewrites them.)
    let mut early = v.raw();
    early.append(&Entry::KeyShredded { at: NOW + 60, tenant: TENANT.into(), key_id: "dek-messages".into() }).unwrap();
    let size = early.size();
    let r = audit_of(&mut early, &v.signer);
    assert!(has(&r, size - 1, "before its waiting period ends"), "{:?}", r.problems);
    // An operator who logs a release after the request anyway (and signs): the audit fails there.
    let mut w = vault();
    drop(released(w.release(1, DEBUG_OFF)));
    let entries = w.entries();
    let release_at = entries.len() - 1;
    let release = entries[release_at].clone();
    let mut forged = w.ledger.log().store().clone();
    forged.rewrite_entry(release_at, shred.to_bytes());
    let mut log = Log::open(forged).unwrap();
    log.append(&release).unwrap();
    let r = audit_of(&mut log, &w.signer);
    assert!(has(&r, release_at as u64 + 1, "shredding request"), "{:?}", r.problems);
}
