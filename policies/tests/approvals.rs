//! M-of-N approvals: keys, detached approvals, activation, approver-set changes, and every way an
//! approval can fail to count.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

mod common;

use coffre_policies::{
    Approval, Approver, ApproverPublicKey, ApproverSecretKey, ApproverSet, Name, Rejection, SetChangeError, SetFormat,
    Subject,
};
use common::bundled;

fn keys(n: usize) -> Vec<ApproverSecretKey> {
    (0..n).map(|_| ApproverSecretKey::generate().unwrap()).collect()
}

fn set_of(keys: &[ApproverSecretKey], threshold: u32, version: u64) -> ApproverSet {
    let names = ["alice", "bob", "carol", "dave", "erin"];
    let toml = format!(
        "format = \"coffre-approvers/v1\"\ntenant = \"example-bank\"\nversion = {version}\nthreshold = {threshold}\n{}",
        keys.iter()
            .zip(names)
            .map(|(k, n)| format!("\n[[approvers]]\nname = \"{n}\"\nkey = \"{}\"\n", k.public()))
            .collect::<String>()
    );
    ApproverSet::from_toml(&toml).unwrap()
}

#[test]
fn two_of_three_activate_a_policy_and_one_does_not() {
    let k = keys(3);
    let set = set_of(&k, 2, 1);
    let policy = bundled("bank-strict");
    let subject = Subject::of_policy(&policy);
    let a = k[0].approve(&subject).unwrap();
    let b = k[2].approve(&subject).unwrap();
    let report = set.activate(policy.clone(), std::slice::from_ref(&a)).unwrap_err();
    assert_eq!((report.accepted.len(), report.threshold, report.of), (1, 2, 3));
    let active = set.activate(policy, &[a, b]).unwrap();
    assert_eq!(active.approved_by(), ["alice", "carol"]);
    assert_eq!(active.approver_set_version(), 1);
}

#[test]
fn approvals_survive_a_round_trip_through_their_file_form() {
    let k = keys(1);
    let policy = bundled("tdx-h100");
    let approval = k[0].approve(&Subject::of_policy(&policy)).unwrap();
    let text = approval.to_json();
    assert!(text.contains("\"format\": \"coffre-approval/v1\"") && text.contains("coffre-p384-approver-"));
    let back = Approval::from_json(&text).unwrap();
    assert_eq!(back, approval);
    assert!(set_of(&k, 1, 1).activate(policy, &[back]).is_ok());
    assert!(Approval::from_json(&text.replace("coffre-approval/v1", "coffre-approval/v9")).unwrap_err().contains("v9"));
}

fn rejection(set: &ApproverSet, policy: &coffre_policies::Policy, approvals: &[Approval]) -> Vec<Rejection> {
    set.check(&Subject::of_policy(policy), approvals).rejected.into_iter().map(|(_, r)| r).collect()
}

#[test]
fn every_kind_of_bad_approval_is_rejected_with_its_reason() {
    let k = keys(3);
    let set = set_of(&k, 2, 1);
    let v1 = bundled("bank-strict");
    let v2 = coffre_policies::Policy::from_toml(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/bundled/bank-strict.toml"))
            .unwrap()
            .replace("version = 1", "version = 2"),
    )
    .unwrap();
    let mut changed = v2.clone();
    changed.description.push_str(" (edited)");

    // Stale: approved version 1, the policy is now version 2.
    let stale = k[0].approve(&Subject::of_policy(&v1)).unwrap();
    assert_eq!(rejection(&set, &v2, std::slice::from_ref(&stale)), [Rejection::Stale { signed: 1 }]);
    // Another (newer) version.
    let newer = k[0].approve(&Subject::of_policy(&v2)).unwrap();
    assert_eq!(rejection(&set, &v1, std::slice::from_ref(&newer)), [Rejection::OtherVersion { signed: 2 }]);
    // Same version, edited after approval.
    assert!(matches!(rejection(&set, &changed, std::slice::from_ref(&newer))[..], [Rejection::DigestMismatch { .. }]));
    // Duplicate: the same approver twice counts once.
    let again = k[0].approve(&Subject::of_policy(&v2)).unwrap();
    let report = set.check(&Subject::of_policy(&v2), &[newer.clone(), again]);
    assert_eq!(report.accepted, ["alice"]);
    assert_eq!(report.rejected, [(1, Rejection::Duplicate { name: "alice".into() })]);
    assert!(!report.is_met());
    // An approver outside the set.
    let outsider = ApproverSecretKey::generate().unwrap();
    let foreign = outsider.approve(&Subject::of_policy(&v2)).unwrap();
    assert_eq!(rejection(&set, &v2, &[foreign]), [Rejection::NotAnApprover { key_id: outsider.public().key_id() }]);
    // Another tenant's document.
    let mut other_tenant = Subject::of_policy(&v2);
    other_tenant.tenant = "other-bank".into();
    let wrong = k[1].approve(&other_tenant).unwrap();
    assert_eq!(rejection(&set, &v2, &[wrong]), [Rejection::WrongTenant { signed: "other-bank".into() }]);
    // Another policy.
    let tdx = k[1].approve(&Subject::of_policy(&bundled("tdx-h100"))).unwrap();
    assert!(matches!(rejection(&set, &v1, &[tdx])[..], [Rejection::WrongDocument { .. }]));
    // A forged signature: a valid approval whose subject was edited afterwards, or whose
    // signer was swapped.
    let mut forged = k[1].approve(&Subject::of_policy(&v2)).unwrap();
    forged.approver = k[2].public().clone();
    assert_eq!(rejection(&set, &v2, &[forged]), [Rejection::BadSignature]);
    let mut garbled = k[1].approve(&Subject::of_policy(&v2)).unwrap();
    garbled.signature = garbled.signature.chars().rev().collect();
    assert_eq!(rejection(&set, &v2, &[garbled]), [Rejection::BadSignature]);
}

#[test]
fn the_approver_set_changes_only_with_the_previous_sets_threshold() {
    let k = keys(4);
    let current = set_of(&k[..3], 2, 1);
    let next = set_of(&k, 3, 2);
    let subject = Subject::of_set(&next);
    let by = |i: usize| k[i].approve(&subject).unwrap();
    // The new member alone, plus one current member, is not enough.
    let report = current.review_change(&next, &[by(3), by(0)]).unwrap();
    assert!(!report.is_met());
    assert_eq!(report.accepted, ["alice"]);
    assert!(matches!(report.rejected[..], [(0, Rejection::NotAnApprover { .. })]));
    let approved = current.change(next.clone(), &[by(0), by(1)]).unwrap();
    assert_eq!(
        (approved.approved_by(), approved.approved_by_version()),
        (&["alice".to_owned(), "bob".into()][..], Some(1))
    );
    assert_eq!(approved.into_set(), next);
    // Versions must follow each other; tenants must agree.
    let skip = set_of(&k, 3, 3);
    assert!(current.review_change(&skip, &[]).unwrap_err().contains("must be version 2"));
    assert!(
        matches!(current.change(skip, &[]), Err(SetChangeError::Invalid(why)) if why.contains("must be version 2"))
    );
    // An approval of the set signed as if it were a policy does not count.
    let mut as_policy = Subject::of_set(&next);
    as_policy.kind = coffre_policies::SubjectKind::Policy;
    assert!(matches!(
        current.change(next, &[k[0].approve(&as_policy).unwrap(), by(1)]),
        Err(SetChangeError::NotApproved(r)) if r.accepted == ["bob"]
    ));
}

/// Red-team finding (critical): `verify_change` returned `Ok(report)` whether or not the threshold
/// was met, and its callers dropped the report, so a set v2 holding only an attacker's key was
/// installed with `approvals: []`. Now no approval, a non-member's approval and an approval of
/// another version each leave no token to install.
#[test]
fn attack_approver_set_replaced_without_approvals_gets_no_token() {
    let k = keys(3);
    let current = set_of(&k, 2, 1);
    let attacker = keys(1);
    let hostile = set_of(&attacker, 1, 2);
    // No approvals at all.
    let Err(SetChangeError::NotApproved(r)) = current.change(hostile.clone(), &[]) else {
        panic!("a change with no approvals was accepted")
    };
    assert_eq!((r.accepted.len(), r.threshold), (0, 2));
    // The attacker approves its own set: not a member of the current set.
    let own = attacker[0].approve(&Subject::of_set(&hostile)).unwrap();
    let Err(SetChangeError::NotApproved(r)) = current.change(hostile.clone(), &[own]) else {
        panic!("a non-member's approval installed a set")
    };
    assert!(matches!(r.rejected[..], [(0, Rejection::NotAnApprover { .. })]));
    // Members' approvals of another version (a v3 with the same members) do not carry over.
    let mut v3 = Subject::of_set(&hostile);
    v3.version = 3;
    let other = [k[0].approve(&v3).unwrap(), k[1].approve(&v3).unwrap()];
    let Err(SetChangeError::NotApproved(r)) = current.change(hostile.clone(), &other) else {
        panic!("approvals of another version installed a set")
    };
    assert!(r.rejected.iter().all(|(_, why)| matches!(why, Rejection::OtherVersion { signed: 3 })));
    // A first set is only ever version 1.
    assert!(matches!(ApproverSet::bootstrap(hostile), Err(SetChangeError::Invalid(_))));
    assert!(ApproverSet::bootstrap(current).is_ok());
}

#[test]
fn approver_sets_are_validated() {
    let k = keys(2);
    let line = |n: &str, key: &ApproverPublicKey| format!("\n[[approvers]]\nname = \"{n}\"\nkey = \"{key}\"\n");
    let head =
        |t: u32| format!("format = \"coffre-approvers/v1\"\ntenant = \"example-bank\"\nversion = 1\nthreshold = {t}\n");
    let err = |text: String| ApproverSet::from_toml(&text).unwrap_err().to_string();
    assert!(err(head(3) + &line("a", k[0].public()) + &line("b", k[1].public())).contains("threshold 3 is impossible"));
    assert!(err(head(0) + &line("a", k[0].public())).contains("threshold 0"));
    assert!(err(head(1) + &line("a", k[0].public()) + &line("a", k[1].public())).contains("listed twice"));
    assert!(err(head(1) + &line("a", k[0].public()) + &line("b", k[0].public())).contains("also another approver's"));
    let recipient = coffre_seal::RecipientSecretKey::derive_for_tests(b"x").unwrap().public().to_string();
    assert!(
        err(head(1) + &format!("\n[[approvers]]\nname = \"a\"\nkey = \"{recipient}\"\n"))
            .contains("recipient (sealing) key")
    );
    let ok = ApproverSet {
        format: SetFormat::V1,
        tenant: Name::new("example-bank").unwrap(),
        version: 1.try_into().unwrap(),
        threshold: 1,
        approvers: vec![Approver { name: Name::new("a").unwrap(), key: k[0].public().clone() }],
    };
    assert_eq!(ApproverSet::from_toml(&(head(1) + &line("a", k[0].public()))).unwrap(), ok);
}

#[test]
fn approver_keys_round_trip_and_never_show_their_secret() {
    let key = ApproverSecretKey::generate().unwrap();
    let file = key.to_key_file();
    let back = ApproverSecretKey::from_key_file(&file).unwrap();
    assert_eq!(back.public(), key.public());
    let secret_line = file.lines().find(|l| l.starts_with("COFFRE-P384-APPROVER-SECRET-")).unwrap();
    assert!(!format!("{key:?}").contains(&secret_line[30..50]));
    assert!(format!("{key:?}").contains("<redacted>"));
    let public = key.public().to_string();
    assert_eq!(public.parse::<ApproverPublicKey>().unwrap(), *key.public());
    let mut typo = public.clone().into_bytes();
    let last = typo.len() - 3;
    typo[last] = if typo[last] == b'A' { b'B' } else { b'A' };
    assert!(String::from_utf8(typo).unwrap().parse::<ApproverPublicKey>().unwrap_err().contains("checksum"));
    assert!(ApproverSecretKey::from_key_file(&format!("{public}\n")).is_err());
}
