//! The collateral store: vendor certificates, CRLs and reference manifests an appraisal needs,
//! imported from an offline mirror (`coffred collateral import DIR`). The vault never fetches
//! anything from a vendor service.
//!
//! | kind | name | what |
//! |---|---|---|
//! | `vcek` | the AMD KDS URL of that chip and TCB | a VCEK (DER) |
//! | `crl` | `Milan`, `Genoa`, `Turin` | AMD's CRL for the product (DER) |
//! | `rim` | the firmware version (`580.95.05`, `96.00.74.00.1A`) | an NVIDIA driver or VBIOS RIM (XML) |
//!
//! A release whose evidence lacks an item the store does not hold either is appraised without it,
//! and the denial names the exact item (the VCEK's KDS URL) so that an operator can mirror it.

use std::path::Path;

use coffre_api::{RawCpu, RawEvidence};
use coffre_attestation::snp::{Product, Report, Tcb, vek};
use coffre_attestation::x509::{Certificate, Crl, certificates_from_pem_or_der};
use sqlx::Row;

use crate::db::Pool;

/// What one import did.
#[derive(Debug, Default)]
pub struct Imported {
    /// (kind, name) stored.
    pub stored: Vec<(String, String)>,
    /// Files skipped, with why.
    pub skipped: Vec<(String, String)>,
}

/// The KDS URL that names a VCEK.
fn vcek_name(cert: &Certificate) -> Option<String> {
    let ext = vek::parse(cert);
    let product = ext.product()?;
    let tcb = ext.tcb?;
    let hwid = ext.hwid?;
    let mut chip = [0u8; 64];
    chip.get_mut(..hwid.len())?.copy_from_slice(&hwid);
    Some(vek::kds_vcek_url(product, &chip, &tcb))
}

fn classify(path: &Path, bytes: &[u8]) -> Result<Vec<(String, String, Vec<u8>)>, String> {
    let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    if name.ends_with(".xml") {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
        let version = text
            .split("colloquialVersion=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .ok_or("an XML file without a RIM's colloquialVersion")?;
        return Ok(vec![("rim".into(), version.to_owned(), bytes.to_vec())]);
    }
    if let Ok(crl) = Crl::from_der(bytes) {
        let product = Product::ALL
            .into_iter()
            .find(|p| crl.issuer_cn.ends_with(p.name()))
            .ok_or_else(|| format!("a CRL by {:?}, not an AMD ARK", crl.issuer_cn))?;
        return Ok(vec![("crl".into(), product.name().to_owned(), bytes.to_vec())]);
    }
    let certs = certificates_from_pem_or_der(bytes)?;
    let mut out = Vec::new();
    for der in certs {
        let cert = Certificate::from_der(&der)?;
        if let Some(url) = vcek_name(&cert) {
            out.push(("vcek".into(), url, der));
        }
    }
    if out.is_empty() {
        return Err("no VCEK, CRL or RIM in it".into());
    }
    Ok(out)
}

/// Imports every file under `dir` (recursively); idempotent.
pub async fn import(pool: &Pool, dir: &Path) -> anyhow::Result<Imported> {
    let mut report = Imported::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| anyhow::anyhow!("{}: {e}", d.display()))? {
            let path = e?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = std::fs::read(&path)?;
            match classify(&path, &bytes) {
                Ok(items) => {
                    for (kind, name, bytes) in items {
                        sqlx::query(
                            "INSERT INTO collateral (kind, name, bytes) VALUES ($1, $2, $3) \
                             ON CONFLICT (kind, name) DO UPDATE SET bytes = excluded.bytes",
                        )
                        .bind(&kind)
                        .bind(&name)
                        .bind(bytes)
                        .execute(pool)
                        .await?;
                        report.stored.push((kind, name));
                    }
                }
                Err(why) => report.skipped.push((path.display().to_string(), why)),
            }
        }
    }
    Ok(report)
}

async fn get(pool: &Pool, kind: &str, name: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
    let row = sqlx::query("SELECT bytes FROM collateral WHERE kind = $1 AND name = $2")
        .bind(kind)
        .bind(name)
        .fetch_optional(pool)
        .await?;
    row.map(|r| r.try_get("bytes")).transpose()
}

/// Fills what `evidence` lacks from the store; returns the items that were needed and missing
/// (as failed-check texts: the exact item to mirror).
pub async fn fill(pool: &Pool, evidence: &mut RawEvidence) -> Result<Vec<String>, sqlx::Error> {
    let mut missing = Vec::new();
    if let RawCpu::Snp { report, vek: vek_slot, crl, .. } = &mut evidence.cpu {
        if let Ok((r, _)) = Report::parse(report) {
            let products: Vec<Product> = match r.cpuid_product() {
                Some(p) => vec![p],
                None => Product::ALL.to_vec(),
            };
            if vek_slot.is_none() && r.signing_key() == coffre_attestation::snp::SigningKey::Vcek {
                let mut urls = Vec::new();
                for p in &products {
                    let (tcb, _): (Tcb, bool) = Tcb::decode(r.reported_tcb_raw(), *p);
                    let url = vek::kds_vcek_url(*p, &r.chip_id(), &tcb);
                    if let Some(der) = get(pool, "vcek", &url).await? {
                        *vek_slot = Some(der);
                        break;
                    }
                    urls.push(url);
                }
                if vek_slot.is_none() {
                    missing.push(format!("the VCEK for this chip and TCB: {}", urls.join(" or ")));
                }
            }
            if crl.is_none() {
                for p in &products {
                    if let Some(der) = get(pool, "crl", p.name()).await? {
                        *crl = Some(der);
                        break;
                    }
                }
            }
        }
    }
    for gpu in &mut evidence.gpus {
        if !gpu.rims.is_empty() {
            continue;
        }
        if let Ok(spdm) = coffre_attestation::nvidia::spdm::SpdmReport::parse(&gpu.report) {
            for version in [&spdm.opaque.driver_version, &spdm.opaque.vbios_version].into_iter().flatten() {
                if let Some(xml) = get(pool, "rim", version).await? {
                    gpu.rims.push(xml);
                }
            }
        }
    }
    Ok(missing)
}
