//! SEV-SNP verification: report bytes, certificates, an optional CRL and the time in; every check
//! with its outcome and the typed claims out. No I/O; nothing here reads a clock or a file.
//!
//! Checks, in the order they are reported:
//!
//! | check | passes when |
//! |---|---|
//! | `report_format` | 1184 bytes, version 2/3/5, ECDSA P-384, every must-be-zero field zero |
//! | `ark` | the chain ends at a pinned AMD ARK (or, only with the dangerous option, a simulated one) |
//! | `ask` / `asvk` | the intermediate is signed by that ARK (RSASSA-PSS SHA-384) |
//! | `vcek` / `vlek` | the endorsement key is signed by the intermediate and carries AMD's extensions |
//! | `signing_key` | the report's SIGNING_KEY names the kind of key that signed it (VCEK vs VLEK) |
//! | `product` | CPUID (v3+), the chain and the certificate's product name agree |
//! | `*_validity` | every certificate is valid at the given time |
//! | `tcb` | the certificate's TCB extensions equal REPORTED_TCB (FMC too on Turin) |
//! | `chip_id` | the VCEK's hwID equals CHIP_ID (64 bytes; the 8-byte Turin form) |
//! | `report_signature` | ECDSA P-384/SHA-384 over bytes 0x000–0x29F with the endorsement key |
//! | `crl` | (when a CRL is given) signed by the ARK, current, and the intermediate is not revoked |
//! | `azure_runtime_data` | (Azure HCL input) REPORT_DATA holds the hash of the runtime data |
//! | `simulated_root` | (simulated chains) recorded so that no decision can miss it |
//!
//! The time-independent part of the chain work (parsing, RSA signatures) is cached per distinct
//! certificate set, so repeated reports from one machine cost one ECDSA verification each.

use std::sync::Arc;

use crate::check::{Check, Verification, Verified};
use crate::memo::{self, Memo};
use crate::snp::claims::SnpClaims;
use crate::snp::input::SnpEvidence;
use crate::snp::report::{Report, SigningKey};
use crate::snp::roots::{self, RootSet};
use crate::snp::vek::{self, VekExtensions, VekKind};
use crate::snp::{Product, Tcb, azure};
use crate::time::UnixTime;
use crate::x509::{Certificate, Crl, PublicKey};
use crate::{Platform, crypto};

/// The outcome of verifying SEV-SNP evidence: every check, and the claims when the report parsed.
pub type SnpVerification = Verification<SnpClaims>;

/// Claims of a report that passed every check. Only [`Verification::into_verified`] makes one.
pub type VerifiedSnp = Verified<SnpClaims>;

/// The time-independent outcome of building a chain for one set of certificates.
#[derive(Debug)]
struct Chain {
    checks: Vec<Check>,
    leaf: Option<(Certificate, VekExtensions)>,
    /// (role, certificate) of every certificate whose validity must be checked.
    certs: Vec<(String, Certificate)>,
    root: Option<RootSet>,
    intermediate: Option<Certificate>,
}

/// Verifies SEV-SNP evidence against AMD's pinned roots.
#[derive(Debug)]
pub struct SnpVerifier {
    roots: Result<Vec<RootSet>, String>,
    cache: Memo<Chain>,
}

impl Default for SnpVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl SnpVerifier {
    /// A verifier that trusts AMD's pinned roots and nothing else.
    pub fn new() -> Self {
        Self { roots: roots::amd().clone(), cache: Memo::default() }
    }

    /// **Development only.** Also trusts a simulated ARK/ASK pair (see the `simulated` feature).
    /// Every certificate subject must say SIMULATED; reports that chain to it verify with
    /// `platform: simulated` and a `simulated_root` check, so no policy or log can mistake them
    /// for hardware. Bundled production policies deny that platform.
    pub fn dangerous_accept_simulated_roots(mut self, ark_der: &[u8], ask_der: &[u8]) -> Result<Self, String> {
        let set = RootSet::new(Product::Milan, ark_der, ask_der, None, true)?;
        let product = set
            .ark
            .subject_cn
            .split_whitespace()
            .find_map(|w| w.strip_prefix("ARK-").and_then(Product::from_cert_name))
            .ok_or("the simulated ARK's name does not say which product it simulates (ARK-<Product>)")?;
        if !set.ark.subject_cn.contains("SIMULATED") || !set.ask.subject_cn.contains("SIMULATED") {
            return Err("the dangerous option only takes roots whose names say SIMULATED".into());
        }
        if let Ok(roots) = &mut self.roots {
            roots.push(RootSet { product, ..set });
        }
        self.cache = Memo::default();
        Ok(self)
    }

    /// Verifies `evidence` at time `now`, reporting every check.
    pub fn verify(&self, evidence: &SnpEvidence, now: UnixTime) -> SnpVerification {
        let mut checks = Vec::new();
        let (report, issues) = match Report::parse(&evidence.report) {
            Ok(parsed) => parsed,
            Err(e) => {
                checks.push(Check::fail("report_format", e));
                return SnpVerification { checks, claims: None };
            }
        };
        checks.push(if issues.is_empty() {
            Check::pass(
                "report_format",
                format!("version {} report, {} bytes", report.version(), evidence.report.len()),
            )
        } else {
            Check::fail("report_format", issues.join("; "))
        });

        let chain = self.chain(evidence);
        checks.extend(chain.checks.iter().cloned());
        if chain.leaf.is_none() && evidence.vek.is_none() {
            let product = report.cpuid_product().unwrap_or(Product::Milan);
            let tcb = Tcb::decode(report.reported_tcb_raw(), product).0;
            checks.push(Check::fail(
                "vcek",
                format!(
                    "no VCEK or VLEK certificate was given; the VCEK for this report is at {}",
                    vek::kds_vcek_url(product, &report.chip_id(), &tcb)
                ),
            ));
        }
        let ext = chain.leaf.as_ref().map(|(_, ext)| ext);

        // Which key signed the report, according to the report itself.
        if let Some(ext) = ext {
            let expected = match ext.kind {
                VekKind::Vcek => SigningKey::Vcek,
                VekKind::Vlek => SigningKey::Vlek,
            };
            checks.push(if report.signing_key() == expected {
                Check::pass("signing_key", format!("the report names the {expected}, and a {expected} signed it"))
            } else {
                Check::fail(
                    "signing_key",
                    format!(
                        "the report's SIGNING_KEY names the {} but the certificate is a {expected}",
                        report.signing_key()
                    ),
                )
            });
        }

        let product = self.product_check(&report, &chain, &mut checks);

        checks.extend(chain.validity(now));

        if let (Some(ext), Some(product)) = (ext, product) {
            checks.push(tcb_check(&report, ext, product));
            checks.push(chip_id_check(&report, ext));
        }

        checks.push(match &chain.leaf {
            Some((leaf, _)) => match &leaf.public_key {
                PublicKey::P384(point) => {
                    if crypto::verify_snp_report_signature(
                        point,
                        report.signed_bytes(),
                        report.signature_r(),
                        report.signature_s(),
                    ) {
                        Check::pass(
                            "report_signature",
                            format!("ECDSA P-384 signature by {} verifies", leaf.subject_cn),
                        )
                    } else {
                        Check::fail(
                            "report_signature",
                            format!("the report signature does not verify with {}", leaf.subject_cn),
                        )
                    }
                }
                _ => Check::fail("report_signature", "the endorsement key is not a P-384 key"),
            },
            None => Check::fail("report_signature", "cannot be checked without a usable VCEK or VLEK"),
        });

        if let Some(crl) = &evidence.crl {
            checks.push(crl_check(crl, &chain, now));
        }
        if let Some(hcl) = &evidence.hcl {
            checks.push(match azure::check_binding(hcl, &report.report_data()) {
                Ok(()) => Check::pass("azure_runtime_data", "REPORT_DATA holds the hash of the HCL runtime data"),
                Err(e) => Check::fail("azure_runtime_data", e),
            });
        }
        let simulated = chain.root.as_ref().is_some_and(|r| r.simulated);
        if simulated {
            checks.push(Check::pass(
                "simulated_root",
                "chain ends at a SIMULATED development root, trusted only through dangerous_accept_simulated_roots",
            ));
        }
        let platform = if simulated { Platform::Simulated } else { Platform::Snp };
        let csp = ext.and_then(|e| e.csp_id.clone());
        let mut claims = SnpClaims::from_report(&report, product, platform, csp);
        claims.crl_checked = checks.iter().any(|c| c.name == "crl" && c.passed);
        SnpVerification { checks, claims: Some(claims) }
    }

    /// Checks an endorsement key certificate and its chain alone (no report): chain signatures,
    /// extensions and validity at `now`. Returns the checks and the decoded extensions.
    pub fn verify_endorsement_key(
        &self,
        vek_der: &[u8],
        chain: &[Vec<u8>],
        now: UnixTime,
    ) -> (Vec<Check>, Option<VekExtensions>) {
        let evidence = SnpEvidence {
            report: Vec::new(),
            vek: Some(vek_der.to_vec()),
            chain: chain.to_vec(),
            crl: None,
            hcl: None,
            form: crate::snp::input::ReportForm::Raw,
        };
        let built = self.chain(&evidence);
        let mut checks = built.checks.clone();
        checks.extend(built.validity(now));
        (checks, built.leaf.as_ref().map(|(_, ext)| ext.clone()))
    }

    fn product_check(&self, report: &Report, chain: &Chain, checks: &mut Vec<Check>) -> Option<Product> {
        let from_chain = chain.root.as_ref().map(|r| r.product);
        let from_cert = chain.leaf.as_ref().and_then(|(_, ext)| ext.product());
        let from_cpuid = report.cpuid_product();
        let mut problems = Vec::new();
        if let Some((family, model, _)) = report.cpuid()
            && from_cpuid.is_none()
        {
            problems.push(format!("CPUID family {family:#04x} model {model:#04x} is not an SEV-SNP product"));
        }
        let mut named: Vec<(&str, Product)> = Vec::new();
        named.extend(from_cpuid.map(|p| ("the report's CPUID", p)));
        named.extend(from_chain.map(|p| ("the certificate chain", p)));
        named.extend(from_cert.map(|p| ("the certificate's product name", p)));
        if let Some((first_src, first)) = named.first() {
            for (src, p) in &named[1..] {
                if p != first {
                    problems.push(format!("{first_src} says {first} but {src} says {p}"));
                }
            }
        }
        let product = from_cpuid.or(from_chain).or(from_cert);
        checks.push(match (problems.is_empty(), product) {
            (true, Some(p)) => Check::pass("product", format!("{p}")),
            (true, None) => Check::fail("product", "the product cannot be determined (no CPUID, no usable chain)"),
            (false, _) => Check::fail("product", problems.join("; ")),
        });
        product
    }

    /// The chain for this evidence's certificates, built once and cached.
    fn chain(&self, evidence: &SnpEvidence) -> Arc<Chain> {
        let key = memo::key(evidence.vek.iter().chain(&evidence.chain).map(Vec::as_slice));
        self.cache.get_or_insert_with(key, || self.build_chain(evidence))
    }

    fn build_chain(&self, evidence: &SnpEvidence) -> Chain {
        let mut chain = self.build_chain_inner(evidence);
        // Every certificate a host supplies must be part of the chain: the intermediate used, or a
        // pinned ARK. Anything else is reported rather than silently ignored.
        if let (Ok(roots), false) = (&self.roots, evidence.chain.is_empty()) {
            for der in &evidence.chain {
                let used = chain.intermediate.as_ref().is_some_and(|i| &i.der == der)
                    || roots.iter().any(|r| &r.ark.der == der);
                if !used {
                    let name = Certificate::from_der(der).map(|c| c.subject_cn).unwrap_or_else(|_| "unparsable".into());
                    chain.checks.push(Check::fail(
                        "chain",
                        format!("the supplied certificate \"{name}\" is not part of the chain from the endorsement key to a pinned AMD root"),
                    ));
                }
            }
        }
        chain
    }

    fn build_chain_inner(&self, evidence: &SnpEvidence) -> Chain {
        let mut chain = Chain { checks: Vec::new(), leaf: None, certs: Vec::new(), root: None, intermediate: None };
        let roots = match &self.roots {
            Ok(r) => r,
            Err(e) => {
                chain.checks.push(Check::fail("ark", format!("the pinned AMD roots are unusable: {e}")));
                return chain;
            }
        };
        let Some(vek_der) = &evidence.vek else { return chain };
        let leaf = match Certificate::from_der(vek_der) {
            Ok(c) => c,
            Err(e) => {
                chain
                    .checks
                    .push(Check::fail("vcek", format!("the endorsement key certificate cannot be parsed: {e}")));
                return chain;
            }
        };
        let ext = vek::parse(&leaf);
        let role = ext.kind.name();
        let inter_role = ext.kind.intermediate();
        if !ext.issues.is_empty() {
            chain.checks.push(Check::fail(format!("{role}_extensions"), ext.issues.join("; ")));
        }

        // Intermediates: the host's, if it gave any (each checked against a pinned ARK), else the
        // pinned ones.
        let mut host = Vec::new();
        for (i, der) in evidence.chain.iter().enumerate() {
            match Certificate::from_der(der) {
                Ok(c) if c.subject_raw == c.issuer_raw => {
                    if !roots.iter().any(|r| r.ark.der == c.der) {
                        chain.checks.push(Check::fail(
                            "ark",
                            format!("the supplied root \"{}\" is not one of the pinned AMD roots", c.subject_cn),
                        ));
                    }
                }
                Ok(c) => host.push(c),
                Err(e) => chain.checks.push(Check::fail("chain", format!("supplied certificate #{}: {e}", i + 1))),
            }
        }
        let candidates: Vec<&Certificate> = if evidence.chain.is_empty() {
            roots.iter().flat_map(RootSet::intermediates).collect()
        } else {
            host.iter().collect()
        };
        let issuers: Vec<&&Certificate> = candidates.iter().filter(|c| c.subject_raw == leaf.issuer_raw).collect();
        if issuers.is_empty() {
            let held: Vec<&str> = candidates.iter().map(|c| c.subject_cn.as_str()).collect();
            let origin = if evidence.chain.is_empty() { "the pinned AMD roots do" } else { "the supplied chain does" };
            let hint = match ext.kind {
                VekKind::Vlek => "; a VLEK is issued by an ASVK (SEV-VLEK-<product>)",
                VekKind::Vcek => "; a VCEK is issued by an ASK (SEV-<product>)",
            };
            chain.checks.push(Check::fail(
                role,
                format!(
                    "{} is issued by \"{}\", which {origin} not hold (held: {}){hint}",
                    leaf.subject_cn,
                    leaf.issuer_cn,
                    held.join(", ")
                ),
            ));
            // The leaf's own validity is still reported.
            chain.certs.push((role.to_owned(), leaf.clone()));
            chain.leaf = Some((leaf, ext));
            return chain;
        }
        // The first candidate that fully verifies wins; if none does, the first one's failures are
        // reported (with its certificates, so their validity is still shown).
        let mut first_failure: Option<(Vec<Check>, Option<RootSet>, Certificate)> = None;
        for inter in issuers {
            let Some(root) = roots.iter().find(|r| r.ark.subject_raw == inter.issuer_raw) else {
                let attempt = vec![Check::fail(
                    inter_role,
                    format!(
                        "\"{}\" is issued by \"{}\", which is not a pinned AMD root",
                        inter.subject_cn, inter.issuer_cn
                    ),
                )];
                first_failure.get_or_insert((attempt, None, (*inter).clone()));
                continue;
            };
            let mut attempt = vec![Check::pass(
                "ark",
                format!(
                    "{} ({}pinned, self-signed)",
                    root.ark.subject_cn,
                    if root.simulated { "SIMULATED, dangerously " } else { "" }
                ),
            )];
            let inter_ok = inter.verify_signed_by(&root.ark);
            attempt.push(match &inter_ok {
                Ok(()) => Check::pass(inter_role, format!("{} signed by {}", inter.subject_cn, root.ark.subject_cn)),
                Err(e) => Check::fail(inter_role, format!("{}: {e}", inter.subject_cn)),
            });
            let right_kind = match ext.kind {
                VekKind::Vlek => inter.subject_cn.contains("VLEK"),
                VekKind::Vcek => !inter.subject_cn.contains("VLEK"),
            };
            let leaf_ok = if right_kind {
                leaf.verify_signed_by(inter)
            } else {
                Err(format!("a {role} cannot be issued by \"{}\"", inter.subject_cn))
            };
            let key_ok = matches!(leaf.public_key, PublicKey::P384(_));
            attempt.push(match (&leaf_ok, key_ok) {
                (Ok(()), true) => Check::pass(role, format!("{} signed by {}", leaf.subject_cn, inter.subject_cn)),
                (Ok(()), false) => Check::fail(role, "the endorsement key is not an ECDSA P-384 key"),
                (Err(e), _) => Check::fail(role, format!("{}: {e}", leaf.subject_cn)),
            });
            let constraints = crate::x509::path_problems(&[&leaf, inter, &root.ark]);
            attempt.push(if constraints.is_empty() {
                Check::pass(
                    "chain_constraints",
                    "basic constraints, key usage, path length and critical extensions allow this path",
                )
            } else {
                Check::fail("chain_constraints", constraints.join("; "))
            });
            if inter_ok.is_ok() && leaf_ok.is_ok() && key_ok && constraints.is_empty() {
                chain.commit(attempt, Some(root.clone()), (*inter).clone(), leaf, ext, inter_role, role);
                return chain;
            }
            first_failure.get_or_insert((attempt, Some(root.clone()), (*inter).clone()));
        }
        if let Some((attempt, root, inter)) = first_failure {
            chain.commit(attempt, root, inter, leaf, ext, inter_role, role);
        }
        chain
    }
}

impl Chain {
    /// One `<role>_validity` check per certificate of the chain.
    fn validity(&self, now: UnixTime) -> Vec<Check> {
        self.certs
            .iter()
            .map(|(role, cert)| {
                let name = format!("{role}_validity");
                match cert.check_validity(now) {
                    Ok(()) => Check::pass(name, format!("valid {} .. {}", cert.not_before, cert.not_after)),
                    Err(e) => Check::fail(name, format!("{} is {e}", cert.subject_cn)),
                }
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn commit(
        &mut self,
        attempt: Vec<Check>,
        root: Option<RootSet>,
        inter: Certificate,
        leaf: Certificate,
        ext: VekExtensions,
        inter_role: &str,
        role: &str,
    ) {
        self.checks.extend(attempt);
        if let Some(root) = &root {
            self.certs.push(("ark".to_owned(), root.ark.clone()));
        }
        self.certs.push((inter_role.to_owned(), inter.clone()));
        self.certs.push((role.to_owned(), leaf.clone()));
        self.root = root;
        self.intermediate = Some(inter);
        self.leaf = Some((leaf, ext));
    }
}

fn tcb_check(report: &Report, ext: &VekExtensions, product: Product) -> Check {
    let (reported, reserved_zero) = Tcb::decode(report.reported_tcb_raw(), product);
    let Some(cert) = ext.tcb else {
        return Check::fail("tcb", "the certificate carries no TCB extensions");
    };
    let mut diffs = Vec::new();
    let mut cmp = |name: &str, c: Option<u8>, r: Option<u8>| {
        if c != r {
            let show = |v: Option<u8>| v.map_or("absent".to_owned(), |v| v.to_string());
            diffs.push(format!("{name}: certificate {} vs REPORTED_TCB {}", show(c), show(r)));
        }
    };
    cmp("bootloader", Some(cert.bootloader), Some(reported.bootloader));
    cmp("tee", Some(cert.tee), Some(reported.tee));
    cmp("snp", Some(cert.snp), Some(reported.snp));
    cmp("microcode", Some(cert.microcode), Some(reported.microcode));
    if product.has_fmc() {
        cmp("fmc", cert.fmc, reported.fmc);
    }
    if !reserved_zero {
        diffs.push(format!("REPORTED_TCB {:#018x} has non-zero reserved bytes", report.reported_tcb_raw()));
    }
    if diffs.is_empty() {
        Check::pass("tcb", format!("certificate TCB = REPORTED_TCB ({reported})"))
    } else {
        Check::fail("tcb", diffs.join("; "))
    }
}

fn chip_id_check(report: &Report, ext: &VekExtensions) -> Check {
    if ext.kind == VekKind::Vlek {
        return Check::pass("chip_id", "a VLEK is not bound to a chip (it is the cloud provider's key)");
    }
    if report.mask_chip_key() {
        return Check::pass(
            "chip_id",
            "the host masked CHIP_ID (MASK_CHIP_KEY); the VCEK signature identifies the chip",
        );
    }
    let chip = report.chip_id();
    match &ext.hwid {
        Some(hwid) if hwid.len() == 64 && hwid[..] == chip[..] => Check::pass("chip_id", "hwID = CHIP_ID"),
        Some(hwid) if hwid.len() == 8 && hwid[..] == chip[..8] => {
            Check::pass("chip_id", "hwID = CHIP_ID[0..8] (8-byte form)")
        }
        Some(hwid) => Check::fail(
            "chip_id",
            format!(
                "the VCEK's hwID {} does not match CHIP_ID {}",
                hex::encode(hwid),
                hex::encode(&chip[..hwid.len().min(64)])
            ),
        ),
        None => Check::fail("chip_id", "the VCEK carries no hwID extension"),
    }
}

fn crl_check(der: &[u8], chain: &Chain, now: UnixTime) -> Check {
    let crl = match Crl::from_der(der) {
        Ok(c) => c,
        Err(e) => return Check::fail("crl", e),
    };
    let (Some(root), Some(inter)) = (&chain.root, &chain.intermediate) else {
        return Check::fail("crl", "cannot be checked without a verified chain");
    };
    let mut problems = Vec::new();
    if let Err(e) = crl.verify_signed_by(&root.ark) {
        problems.push(format!("CRL {e}"));
    }
    if now < crl.this_update {
        problems.push(format!("the CRL is not valid before {}", crl.this_update));
    }
    match crl.next_update {
        Some(next) if now > next => problems.push(format!("the CRL expired at {next}")),
        None => problems.push("the CRL has no nextUpdate".into()),
        _ => {}
    }
    if crl.is_revoked(&inter.serial) {
        problems.push(format!("{} (serial {}) is revoked", inter.subject_cn, hex::encode(&inter.serial)));
    }
    if problems.is_empty() {
        Check::pass(
            "crl",
            format!(
                "{} CRL of {} is current; {} is not revoked",
                root.ark.subject_cn, crl.this_update, inter.subject_cn
            ),
        )
    } else {
        Check::fail("crl", problems.join("; "))
    }
}
