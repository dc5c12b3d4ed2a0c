//! Policy and approver-set documents, approvals and requests: never panic. A policy that loads
//! can be linted, explained and re-encoded canonically, and its canonical digest is stable.
#![no_main]

use coffre_policies::{Approval, ApproverSet, Policy, explain, lint};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match Policy::from_toml(text) {
        Ok(policy) => {
            let _ = lint(&policy);
            let _ = explain(&policy);
            let digest = policy.digest();
            assert_eq!(policy.clone().digest(), digest);
            assert!(!policy.canonical_bytes().is_empty());
        }
        Err(e) => {
            // Located errors point inside the document.
            assert!(e.line <= text.lines().count().max(1) + 1, "line {} of {}", e.line, text.lines().count());
        }
    }
    let _ = ApproverSet::from_toml(text);
    let _ = Approval::from_json(text);
});
