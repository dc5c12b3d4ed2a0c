//! KBS releases in the state machine the vault and the auditor share: what the vault writes
//! audits clean, and what a dishonest writer could put in the log instead is refused by both
//! (`LogState::check` and the audit).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use coffre_api::{RawCpu, RawEvidence};
use coffre_attestation::composite::CompositeVerifier;
use coffre_attestation::kbs::RuntimeData;
use coffre_broker::audit::{Audience, Report, audit};
use coffre_broker::development::{self, TENANT};
use coffre_broker::state::{KBS_ATTESTATION_MAX_SECS, policy_version};
use coffre_broker::{Appraised, Justification, KbsDecided, Ledger, LogState, appraise_kbs};
use coffre_log::{Digest, Entry, Log, MemoryStore, NoteSigner};
use coffre_policies::{Policy, Subject};
use coffre_seal::RecipientSecretKey;

const NOW: u64 = 1_796_000_000;

const KBS_POLICY: &str = r#"format = "coffre-policy/v1"
id = "coco-testing"
version = 1
tenant = "example-bank"
description = "KBS clients on the sample TEE, for tests."

[scope]
datasets = ["*"]
job_kinds = ["kbs-resource"]

[platform]
kinds = ["simulated"]
"#;

fn verifier() -> CompositeVerifier {
    CompositeVerifier::new().dangerous_accept_sample()
}

struct Vault {
    ledger: Ledger<MemoryStore>,
    signer: NoteSigner,
}

/// A development vault: the example tenant with dataset `messages` (one object), the KBS test
/// policy active beside the development one and, when `testing`, the tenant marked for testing.
fn vault(testing: bool) -> Vault {
    let mut ledger = Ledger::open(MemoryStore::new()).unwrap();
    let output = RecipientSecretKey::generate(&mut coffre_seal::SystemRandom).unwrap();
    let setup =
        development::bootstrap(&mut ledger, NOW, "messages", Digest::of(b"object"), "dek-messages", output.public())
            .unwrap();
    let policy = Policy::from_toml(KBS_POLICY).unwrap();
    let approval = setup.officer.approve(&Subject::of_policy(&policy)).unwrap();
    let document = ledger.put_blob(KBS_POLICY.as_bytes()).unwrap();
    let approval = ledger.put_blob(approval.to_json().as_bytes()).unwrap();
    ledger
        .record(&Entry::PolicyActivated {
            at: NOW,
            tenant: TENANT.into(),
            policy: policy_version(&policy.reference()),
            document,
            approvals: vec![approval],
            approver_set: 1,
        })
        .unwrap();
    if testing {
        ledger.record(&Entry::TenantTesting { at: NOW, tenant: TENANT.into(), testing: true }).unwrap();
    }
    Vault { ledger, signer: NoteSigner::generate("vault.test/log").unwrap() }
}

/// A sample guest's attestation: runtime data with `nonce`, its evidence, binding document and
/// TEE key, appraised at `verified`.
struct Attestation {
    evidence: RawEvidence,
    document: Vec<u8>,
    tee_pubkey: Vec<u8>,
    appraised: Appraised,
}

fn attestation(nonce: u8, verified: u64) -> Attestation {
    let rd = RuntimeData {
        nonce: STANDARD.encode([nonce; 32]),
        tee_pubkey: serde_json::json!({"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": "AA", "y": "AA"}),
        additional_evidence: String::new(),
    };
    let hash = &rd.report_data().unwrap()[..48];
    let sample = serde_json::json!({"svn": "1", "report_data": STANDARD.encode(hash)});
    let evidence = RawEvidence {
        cpu: RawCpu::Sample { evidence: serde_json::to_vec(&sample).unwrap(), device: None },
        gpus: Vec::new(),
    };
    let document = rd.binding_document().unwrap();
    let appraised = appraise_kbs(&verifier(), Ok(&evidence), &document, verified);
    Attestation { evidence, document, tee_pubkey: rd.tee_pubkey_bytes().unwrap(), appraised }
}

impl Vault {
    fn fetch(&mut self, at: u64, a: &Attestation, resource: &str) -> KbsDecided {
        self.ledger.decide_kbs(at, TENANT, resource, &a.evidence, &a.appraised, (&a.document, &a.tee_pubkey)).unwrap()
    }

    fn audit(&mut self) -> Report {
        self.ledger.sign_checkpoint(&self.signer).unwrap();
        audit(self.ledger.log().store(), self.signer.verifier(), None, &verifier(), Audience::Development).0
    }
}

fn failed(d: KbsDecided) -> Vec<String> {
    match d {
        KbsDecided::Denied(d) => d.failed.iter().map(|f| format!("{}: {}", f.name, f.actual)).collect(),
        KbsDecided::Released(t) => panic!("released {}", t.key_id()),
    }
}

#[test]
fn a_sample_guest_of_a_testing_tenant_gets_each_key_once_logged_and_the_audit_agrees() {
    let mut v = vault(true);
    let a = attestation(1, NOW);
    for resource in ["messages/key/latest", "messages/key/1"] {
        match v.fetch(NOW + 10, &a, resource) {
            KbsDecided::Released(t) => {
                assert_eq!((t.key_id(), t.dataset(), t.simulated()), ("dek-messages", "messages", true));
                assert_eq!(t.policies(), ["coco-testing@1"]);
            }
            KbsDecided::Denied(d) => panic!("{:?}", d.failed),
        }
    }
    // Denials of resources the attestation cannot have leave the attestation usable.
    assert!(failed(v.fetch(NOW + 10, &a, "messages/key/2")).iter().any(|f| f.contains("no version 2")));
    assert!(matches!(v.fetch(NOW + 11, &a, "messages/key/1"), KbsDecided::Released(_)));
    let r = v.audit();
    assert!(r.ok(), "{:?}", r.problems);
    assert_eq!((r.releases, r.simulated_releases, r.denials), (3, 3, 1));
}

#[test]
fn attack_kbs_release_logged_without_an_allowing_policy() {
    // The tenant is not marked for testing: the vault denies the sample TEE…
    let mut v = vault(false);
    let a = attestation(1, NOW);
    assert!(failed(v.fetch(NOW, &a, "messages/key/latest")).iter().any(|f| f.starts_with("platform.sample_tenant")));
    // …and a release written into the log anyway, on the denial's own evidence bundle, is
    // refused by the state machine and fails the audit.
    let entries: Vec<Entry> = (0..v.ledger.log().size()).map(|i| v.ledger.log().entry(i).unwrap()).collect();
    let Some(Entry::ReleaseDenied {
        evidence_bundle: Some(bundle),
        job_manifest: Some(binding),
        nonce: Some(nonce),
        ..
    }) = entries.last().cloned()
    else {
        panic!("no denial")
    };
    let forged = Entry::KbsReleased {
        at: NOW + 1,
        tenant: TENANT.into(),
        resource: "messages/key/latest".into(),
        dataset: "messages".into(),
        key_id: "dek-messages".into(),
        policies: Vec::new(),
        evidence_bundle: bundle,
        binding,
        tee_pubkey: Digest::of(&a.tee_pubkey),
        nonce,
        simulated: true,
    };
    let state: &LogState = v.ledger.state();
    let refused = state
        .check(
            &forged,
            &mut coffre_broker::ledger::StoreBlobs(v.ledger.log().store()),
            &Justification::Appraised(&a.appraised),
        )
        .unwrap_err();
    assert!(refused.iter().any(|r| r.contains("not justified")), "{refused:?}");
    let mut raw = Log::open(v.ledger.log().store().clone()).unwrap();
    raw.append(&forged).unwrap();
    raw.sync().unwrap();
    raw.sign_checkpoint(&v.signer).unwrap();
    let r = audit(raw.store(), v.signer.verifier(), None, &verifier(), Audience::Development).0;
    let at = raw.size() - 1;
    assert!(
        r.problems.iter().any(|p| p.entry == Some(at) && p.reason.contains("not justified: platform.sample_tenant")),
        "{:?}",
        r.problems
    );
}

#[test]
fn attack_kbs_nonce_of_a_failed_attestation_reused_for_a_release() {
    let mut v = vault(true);
    let a = attestation(3, NOW);
    // The first /attest failed (say, a collateral gap): its nonce is used up in the log.
    let mut failing = a.appraised.clone();
    failing.fail("collateral", "every item", "a VCEK is missing");
    v.ledger.deny_kbs_attestation(NOW, TENANT, Some(&a.evidence), &failing, Some(&a.document)).unwrap();
    // The same nonce and evidence cannot fetch a key afterwards.
    assert!(failed(v.fetch(NOW + 1, &a, "messages/key/latest")).iter().any(|f| f.contains("a replay")));
    // A nonce a KBS release used is seen, so no worker release can take it (release_rules).
    let b = attestation(4, NOW);
    assert!(matches!(v.fetch(NOW + 1, &b, "messages/key/latest"), KbsDecided::Released(_)));
    assert!(v.ledger.state().nonce_seen(&[4; 32]));
    let r = v.audit();
    assert!(r.ok(), "{:?}", r.problems);
}

#[test]
fn attack_kbs_attestation_used_after_its_lifetime() {
    let mut v = vault(true);
    let a = attestation(5, NOW);
    let late = NOW + KBS_ATTESTATION_MAX_SECS + 1;
    assert!(
        failed(v.fetch(late, &a, "messages/key/latest")).iter().any(|f| f.contains("an attestation serves at most"))
    );
    // Evidence "verified" in the future of its decision is refused too.
    let mut v = vault(true);
    let b = attestation(6, NOW + 100);
    assert!(
        failed(v.fetch(NOW, &b, "messages/key/latest")).iter().any(|f| f.contains("an attestation serves at most"))
    );
}

#[test]
fn attack_tenant_marked_for_testing_in_a_production_log() {
    let mut state = LogState::new();
    let store = MemoryStore::new();
    let mut blobs = coffre_broker::ledger::StoreBlobs(&store);
    let t = state
        .check(
            &Entry::TenantCreated { at: NOW, tenant: "bank".into(), name: "Bank".into() },
            &mut blobs,
            &Justification::Recorded,
        )
        .unwrap();
    state.apply(t).unwrap();
    let refused = state
        .check(
            &Entry::TenantTesting { at: NOW, tenant: "bank".into(), testing: true },
            &mut blobs,
            &Justification::Recorded,
        )
        .unwrap_err();
    assert!(refused[0].contains("development mode"), "{refused:?}");
}

#[test]
fn a_production_verifier_denies_the_sample_tee() {
    let a = attestation(7, NOW);
    let appraised = appraise_kbs(&CompositeVerifier::new(), Ok(&a.evidence), &a.document, NOW);
    assert!(appraised.verified.is_none());
    assert!(appraised.failed.iter().any(|f| f.name == "evidence.cpu.sample.sample_accepted"), "{:?}", appraised.failed);
}

#[test]
fn attack_entry_too_long_to_read_back() {
    let mut v = vault(true);
    let size = v.ledger.log().size();
    let huge = Entry::ReleaseDenied {
        at: NOW,
        tenant: TENANT.into(),
        job: None,
        policies: Vec::new(),
        evidence_bundle: None,
        job_manifest: None,
        nonce: None,
        failed: vec![coffre_log::FailedCheck {
            policy: String::new(),
            name: "nonce".into(),
            expected: "x".into(),
            actual: "A".repeat(2 << 20),
        }],
        resource: None,
    };
    let refused = v.ledger.record(&huge).unwrap_err();
    assert!(refused.to_string().contains("bytes"), "{refused}");
    assert_eq!(v.ledger.log().size(), size, "nothing was appended");
    // The ledger is not poisoned: the next decision is made and the log still opens.
    let a = attestation(9, NOW);
    assert!(matches!(v.fetch(NOW, &a, "messages/key/latest"), KbsDecided::Released(_)));
    Ledger::open(v.ledger.log().store().clone()).unwrap();
    // And a failed check quoting a requester's megabyte is cut to a bounded, named text.
    let mut failing = a.appraised.clone();
    failing.fail("nonce", "the session's", "B".repeat(1 << 20));
    let text = &failing.failed.last().unwrap().actual;
    assert!(text.len() < 1200 && text.contains("1048576 bytes, SHA-256"), "{}", text.len());
}
