//! Every TDX/SGX DCAP sample in the shared test data, with exactly the verdict, TCB status and
//! advisories its PROVENANCE.md states, each at a time inside its collateral window.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

use coffre_attestation::UnixTime;
use coffre_attestation::tdx::quote::Body;
use coffre_attestation::tdx::{PcsCollateral, TdxCollateral, TdxVerification, TdxVerifier};

fn at(t: &str) -> UnixTime {
    UnixTime::parse_rfc3339(t).unwrap()
}

/// Quote bytes: raw, or hex text (with or without 0x).
fn quote(rel: &str) -> Option<Vec<u8>> {
    let bytes = coffre_testkit::read(rel)?;
    if let Ok(text) = std::str::from_utf8(&bytes)
        && let Ok(decoded) = hex::decode(text.trim().trim_start_matches("0x"))
    {
        return Some(decoded);
    }
    Some(bytes)
}

fn dcap_json(rel: &str) -> Option<TdxCollateral> {
    Some(TdxCollateral::from_dcap_json(&coffre_testkit::read(rel)?).unwrap())
}

/// The go-tdx-guest 2023 collateral (raw PCS responses).
fn go_tdx_guest_2023() -> Option<TdxCollateral> {
    let r = |f: &str| coffre_testkit::read(&format!("tdx/go-tdx-guest/{f}"));
    let (tcb, qe, pck_crl, root_crl, tcb_chain, qe_chain, crl_chain) = (
        r("sample_tcbInfo_response")?,
        r("sample_qeIdentity_response")?,
        r("pckcrl")?,
        r("rootcrl.der")?,
        r("tcb_info_issuer_chain.pem")?,
        r("qe_identity_issuer_chain.pem")?,
        r("pck_crl_issuer_chain.pem")?,
    );
    Some(
        TdxCollateral::from_pcs(&PcsCollateral {
            tcb_info_response: &tcb,
            qe_identity_response: &qe,
            pck_crl: &pck_crl,
            root_crl: &root_crl,
            tcb_info_issuer_chain: &tcb_chain,
            qe_identity_issuer_chain: &qe_chain,
            pck_crl_issuer_chain: &crl_chain,
        })
        .unwrap(),
    )
}

fn verify(q: &[u8], c: &TdxCollateral, t: &str) -> TdxVerification {
    TdxVerifier::new().verify(q, c, at(t))
}

fn assert_valid(name: &str, v: &TdxVerification, tee: &str, body: Body, status: &str, advisories: &[&str]) {
    assert!(v.is_verified(), "{name}: {:#?}", v.errors());
    let c = v.claims.as_ref().unwrap();
    assert_eq!((c.tee, c.body), (tee, body), "{name}");
    assert_eq!(c.tcb_status.as_deref(), Some(status), "{name}");
    assert_eq!(c.advisory_ids, advisories, "{name}");
}

/// Crypto valid (the quote's own signatures, binding and PCK chain all pass), but no TCB level
/// of the collateral matches the platform.
fn assert_no_matching_tcb(name: &str, v: &TdxVerification) {
    assert!(!v.is_verified(), "{name} must be rejected");
    let dcap = v.checks.iter().find(|c| c.name == "dcap_verification").unwrap();
    assert!(!dcap.passed && dcap.detail.contains("No matching TCB level"), "{name}: {dcap:?}");
    assert_crypto_valid(name, v);
}

fn assert_crypto_valid(name: &str, v: &TdxVerification) {
    for check in ["attestation_key_signature", "qe_report_signature", "qe_report_binding", "pck_chain"] {
        let c = v.checks.iter().find(|c| c.name == check).unwrap_or_else(|| panic!("{name}: no {check}"));
        assert!(c.passed, "{name}: {c:?}");
    }
}

const JUNE_2025: &str = "2025-06-19T11:32:27Z";
const FEB_2026: &str = "2026-02-18T11:58:51Z";

#[test]
fn dcap_qvl_tdx_quote_is_up_to_date() {
    let (Some(q), Some(c)) = (quote("tdx/dcap-qvl/tdx_quote"), dcap_json("tdx/dcap-qvl/tdx_quote_collateral.json"))
    else {
        return;
    };
    let v = verify(&q, &c, JUNE_2025);
    assert_valid("tdx_quote", &v, "tdx", Body::Td10, "UpToDate", &[]);
    let claims = v.claims.unwrap();
    assert_eq!(claims.fmspc.as_deref(), Some("b0c06f000000"));
    let td = claims.td.unwrap();
    assert!(!td.td_attributes.debug && td.td_attributes.sept_ve_disable);
    assert_eq!(q.len() - 4936, 70, "70 zero bytes of padding follow the signature data and are accepted");
}

#[test]
fn dcap_qvl_outdated_v5_quote_has_no_matching_tcb_level() {
    let (Some(q), Some(c)) =
        (quote("tdx/dcap-qvl/tdx_quote_outdated"), dcap_json("tdx/dcap-qvl/tdx_quote_outdated_collateral.json"))
    else {
        return;
    };
    let v = verify(&q, &c, FEB_2026);
    assert_no_matching_tcb("tdx_quote_outdated", &v);
    assert_eq!(v.claims.unwrap().body, Body::Td15);
}

#[test]
fn dcap_qvl_sgx_quote_needs_configuration_and_hardening() {
    let (Some(q), Some(c)) = (quote("tdx/dcap-qvl/sgx_quote"), dcap_json("tdx/dcap-qvl/sgx_quote_collateral.json"))
    else {
        return;
    };
    let v = verify(&q, &c, "2025-06-19T11:56:11Z");
    assert_valid(
        "sgx_quote",
        &v,
        "sgx",
        Body::Sgx,
        "ConfigurationAndSWHardeningNeeded",
        &["INTEL-SA-00289", "INTEL-SA-00615"],
    );
    assert_eq!(v.claims.unwrap().fmspc.as_deref(), Some("00a067110000"));
}

#[test]
fn dcap_qvl_hex_quotes_have_no_matching_tcb_level_with_june_collateral() {
    let Some(c) = dcap_json("tdx/dcap-qvl/tdx_quote_collateral.json") else { return };
    for file in ["quote-from-tappd.hex", "tdx-quote.hex"] {
        let Some(q) = quote(&format!("tdx/dcap-qvl/{file}")) else { return };
        assert_no_matching_tcb(file, &verify(&q, &c, JUNE_2025));
    }
}

#[test]
fn dcap_qvl_near_quote_is_up_to_date() {
    let (Some(q), Some(c)) =
        (quote("tdx/dcap-qvl/near_quote.hex"), dcap_json("tdx/dcap-qvl/near_quote_collateral.json"))
    else {
        return;
    };
    let v = verify(&q, &c, "2025-09-02T08:41:59Z");
    assert_valid("near_quote", &v, "tdx", Body::Td10, "UpToDate", &[]);
    assert_eq!(v.claims.unwrap().fmspc.as_deref(), Some("20a06f000000"));
}

#[test]
fn go_tdx_guest_v5_sample_is_up_to_date() {
    let (Some(q), Some(c)) =
        (quote("tdx/go-tdx-guest/quote_v5_sample.dat"), dcap_json("tdx/dcap-qvl/tdx_quote_outdated_collateral.json"))
    else {
        return;
    };
    assert_valid("quote_v5_sample", &verify(&q, &c, FEB_2026), "tdx", Body::Td15, "UpToDate", &[]);
}

#[test]
fn go_tdx_guest_spr_quote_with_pcs_collateral_has_no_matching_tcb_level_and_trailing_bytes() {
    let (Some(q), Some(c)) = (quote("tdx/go-tdx-guest/tdx_prod_quote_SPR_E4.dat"), go_tdx_guest_2023()) else { return };
    let v = verify(&q, &c, "2023-06-18T09:42:58Z");
    assert_no_matching_tcb("SPR_E4", &v);
    // Decision: the 39 non-zero bytes the upstream authors appended are not zero padding.
    let format = v.checks.iter().find(|c| c.name == "quote_format").unwrap();
    assert!(!format.passed && format.detail.contains("not zero padding"), "{format:?}");
}

#[test]
fn trustee_tdx_quote_4_is_up_to_date_with_pcs_collateral() {
    let (Some(q), Some(c)) = (quote("vectors/trustee-evidence/tdx/tdx_quote_4.dat"), go_tdx_guest_2023()) else {
        return;
    };
    assert_valid("tdx_quote_4", &verify(&q, &c, "2023-06-18T09:42:58Z"), "tdx", Body::Td10, "UpToDate", &[]);
}

#[test]
fn trustee_tdx_quote_5_has_no_matching_tcb_level() {
    let (Some(q), Some(c)) = (
        quote("vectors/trustee-evidence/tdx/tdx_quote_5.dat"),
        dcap_json("tdx/dcap-qvl/tdx_quote_outdated_collateral.json"),
    ) else {
        return;
    };
    assert_no_matching_tcb("tdx_quote_5", &verify(&q, &c, FEB_2026));
}

#[test]
fn trustee_tdx_quote_6_cannot_be_checked_in_window() {
    // TCB Info and QE Identity from trustee (valid Oct/Nov 2025), the TCB-signing chain and CRLs
    // from the 2025 dcap-qvl collateral: no PCK CRL of that window exists in the shared data.
    let (Some(q), Some(tcb), Some(qe), Some(base)) = (
        quote("vectors/trustee-evidence/tdx/tdx_quote_6.dat"),
        coffre_testkit::read("vectors/trustee-evidence/tdx/tcbInfo.json"),
        coffre_testkit::read("vectors/trustee-evidence/tdx/enclaveIdentity.json"),
        coffre_testkit::read("tdx/dcap-qvl/near_quote_collateral.json"),
    ) else {
        return;
    };
    let doc: serde_json::Value = serde_json::from_slice(&base).unwrap();
    let s = |k: &str| doc[k].as_str().unwrap().as_bytes().to_vec();
    let c = TdxCollateral::from_pcs(&PcsCollateral {
        tcb_info_response: &tcb,
        qe_identity_response: &qe,
        pck_crl: &s("pck_crl"),
        root_crl: &s("root_ca_crl"),
        tcb_info_issuer_chain: &s("tcb_info_issuer_chain"),
        qe_identity_issuer_chain: &s("qe_identity_issuer_chain"),
        pck_crl_issuer_chain: &s("pck_crl_issuer_chain"),
    })
    .unwrap();
    let v = verify(&q, &c, "2025-10-28T07:45:09Z");
    assert!(!v.is_verified());
    assert_crypto_valid("tdx_quote_6", &v);
    assert!(v.errors().iter().any(|e| e.starts_with("pck_crl_validity")), "{:#?}", v.errors());
}

#[test]
fn quotes_without_collateral_still_have_a_valid_layout() {
    // No collateral exists in the shared data for these; their layout (and, for cos-113, its
    // 3065 bytes of zero padding) must be accepted, and without collateral nothing verifies.
    for file in [
        "tdx/go-tdx-guest/cos-113-tdx-quote.dat",
        "tdx/trustee/az-tdx-vtpm-td-quote.bin",
        "tdx/trustee/occlum_quote.dat",
    ] {
        let Some(q) = quote(file) else { return };
        let (_, problems) = coffre_attestation::tdx::quote::parse(&q).unwrap();
        assert!(problems.is_empty(), "{file}: {problems:?}");
        // PROVENANCE: "crypto VALID only": every check but the missing collateral passes.
        let v = TdxVerifier::new().verify_without_collateral(&q, at("2025-06-01T00:00:00Z"));
        assert_crypto_valid(file, &v);
        let failed: Vec<&str> = v.checks.iter().filter(|c| !c.passed).map(|c| c.name.as_str()).collect();
        assert_eq!(failed, ["collateral"], "{file}");
        assert!(v.claims.is_some() && !v.is_verified());
    }
}

#[test]
fn collateral_outside_its_window_names_each_expired_item() {
    let (Some(q), Some(c)) = (quote("tdx/dcap-qvl/tdx_quote"), dcap_json("tdx/dcap-qvl/tdx_quote_collateral.json"))
    else {
        return;
    };
    let v = verify(&q, &c, "2025-08-01T00:00:00Z");
    assert!(!v.is_verified());
    let failed: Vec<String> = v.checks.iter().filter(|c| !c.passed).map(|c| c.name.clone()).collect();
    for item in ["tcb_info_validity", "qe_identity_validity", "pck_crl_validity", "dcap_verification"] {
        assert!(failed.contains(&item.to_owned()), "{item} missing from {failed:?}");
    }
    let early = verify(&q, &c, "2025-06-01T00:00:00Z");
    assert!(early.errors().iter().any(|e| e.contains("not valid before")), "{:#?}", early.errors());
}

#[test]
fn every_byte_flip_of_a_valid_quote_is_rejected() {
    let (Some(q), Some(c)) = (quote("tdx/dcap-qvl/tdx_quote"), dcap_json("tdx/dcap-qvl/tdx_quote_collateral.json"))
    else {
        return;
    };
    let verifier = TdxVerifier::new();
    let now = at(JUNE_2025);
    // Every signed byte, and the padding.
    for i in (0..q.len()).step_by(1) {
        let mut bad = q.clone();
        bad[i] ^= 0x01;
        assert!(!verifier.verify(&bad, &c, now).is_verified(), "flipping byte {i} of the quote was accepted");
    }
}

/// roots/intel/: the pinned Intel SGX Root CA is Intel's, byte for byte, as both shared copies hold it.
#[test]
fn pinned_intel_root_is_the_shared_one() {
    let pinned = std::fs::read(format!("{}/roots/intel/sgx_root_ca.der", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let (Some(der), Some(pem)) = (
        coffre_testkit::read("roots/intel/Intel_SGX_Root_CA.der"),
        coffre_testkit::read("roots/intel/Intel_SGX_Root_CA.pem"),
    ) else {
        return;
    };
    assert_eq!(pinned, der);
    assert_eq!(pinned, coffre_attestation::x509::certificates_from_pem_or_der(&pem).unwrap()[0]);
}

/// The verifier remembers dcap-qvl's verdict per platform and collateral; a remembered verdict
/// must give exactly the same result, and never stand in for a check this quote fails.
#[test]
fn remembered_verdicts_never_outlive_their_conditions() {
    let (Some(q), Some(c)) = (quote("tdx/dcap-qvl/tdx_quote"), dcap_json("tdx/dcap-qvl/tdx_quote_collateral.json"))
    else {
        return;
    };
    let verifier = TdxVerifier::new();
    let first = verifier.verify(&q, &c, at(JUNE_2025));
    assert!(first.is_verified());
    assert_eq!(verifier.verify(&q, &c, at(JUNE_2025)), first, "the remembered verdict is the same verdict");
    // Another MRTD on the same platform: the remembered TCB verdict is not used, because this
    // quote's own signature fails.
    let mut other = q.clone();
    other[48 + 136] ^= 1;
    let v = verifier.verify(&other, &c, at(JUNE_2025));
    let failed: Vec<&str> = v.checks.iter().filter(|c| !c.passed).map(|c| c.name.as_str()).collect();
    assert_eq!(failed, ["attestation_key_signature", "dcap_verification"]);
    // After the collateral expired: dcap-qvl is asked again and refuses too.
    let late = verifier.verify(&q, &c, at("2025-08-01T00:00:00Z"));
    assert!(late.checks.iter().any(|c| c.name == "dcap_verification" && !c.passed));
}
