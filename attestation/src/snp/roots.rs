//! AMD's root keys for SEV-SNP, pinned in the code: the ARK, ASK and ASVK of Milan, Genoa and
//! Turin, as AMD's Key Distribution Service publishes them (`/vcek/v1/<product>/cert_chain` and
//! `/vlek/v1/<product>/cert_chain`). SHA-256 of the DER:
//!
//! | product | ARK | ASK | ASVK |
//! |---|---|---|---|
//! | Milan | `69d063b45344d26a…` | `67d303bd3905fd38…` | `c5e081f59b7efab1…` |
//! | Genoa | `4c6598d19c18719c…` | `5464738c1546aed5…` | `197e610743a917d6…` |
//! | Turin | `1f084161a44bb6d9…` | `5b77ef5fe7a7a004…` | `104e10a8bd060a3c…` |
//!
//! A certificate handed over by a host is only an intermediate to be checked against these; an
//! ARK from a host is accepted only if it is byte-identical to one of them.

use std::sync::OnceLock;

use crate::snp::Product;
use crate::x509::Certificate;

/// One product's root certificates.
#[derive(Debug, Clone)]
pub struct RootSet {
    /// The product.
    pub product: Product,
    /// AMD Root Key (self-signed).
    pub ark: Certificate,
    /// AMD SEV Key: issues VCEKs.
    pub ask: Certificate,
    /// AMD SEV VLEK key: issues VLEKs (absent for a simulated set).
    pub asvk: Option<Certificate>,
    /// A development root accepted through the dangerous option; claims say `simulated`.
    pub simulated: bool,
}

struct Pinned {
    product: Product,
    ark: &'static [u8],
    ask: &'static [u8],
    asvk: &'static [u8],
}

const PINNED: [Pinned; 3] = [
    Pinned {
        product: Product::Milan,
        ark: include_bytes!("../../roots/amd/milan_ark.der"),
        ask: include_bytes!("../../roots/amd/milan_ask.der"),
        asvk: include_bytes!("../../roots/amd/milan_asvk.der"),
    },
    Pinned {
        product: Product::Genoa,
        ark: include_bytes!("../../roots/amd/genoa_ark.der"),
        ask: include_bytes!("../../roots/amd/genoa_ask.der"),
        asvk: include_bytes!("../../roots/amd/genoa_asvk.der"),
    },
    Pinned {
        product: Product::Turin,
        ark: include_bytes!("../../roots/amd/turin_ark.der"),
        ask: include_bytes!("../../roots/amd/turin_ask.der"),
        asvk: include_bytes!("../../roots/amd/turin_asvk.der"),
    },
];

impl RootSet {
    /// Parses a root set and checks its internal signatures: the ARK is self-signed and signed
    /// the ASK (and ASVK).
    pub fn new(product: Product, ark: &[u8], ask: &[u8], asvk: Option<&[u8]>, simulated: bool) -> Result<Self, String> {
        let ark = Certificate::from_der(ark).map_err(|e| format!("{product} ARK: {e}"))?;
        let ask = Certificate::from_der(ask).map_err(|e| format!("{product} ASK: {e}"))?;
        let asvk = asvk.map(Certificate::from_der).transpose().map_err(|e| format!("{product} ASVK: {e}"))?;
        ark.verify_signed_by(&ark).map_err(|e| format!("{product} ARK is not self-signed: {e}"))?;
        ask.verify_signed_by(&ark).map_err(|e| format!("{product} ASK: {e}"))?;
        if let Some(asvk) = &asvk {
            asvk.verify_signed_by(&ark).map_err(|e| format!("{product} ASVK: {e}"))?;
        }
        Ok(Self { product, ark, ask, asvk, simulated })
    }

    /// The intermediates this set holds.
    pub fn intermediates(&self) -> impl Iterator<Item = &Certificate> {
        std::iter::once(&self.ask).chain(self.asvk.as_ref())
    }
}

/// AMD's pinned roots, parsed and checked once. `Err` would mean the embedded certificates are
/// damaged; every verification then fails closed.
pub fn amd() -> &'static Result<Vec<RootSet>, String> {
    static ROOTS: OnceLock<Result<Vec<RootSet>, String>> = OnceLock::new();
    ROOTS.get_or_init(|| PINNED.iter().map(|p| RootSet::new(p.product, p.ark, p.ask, Some(p.asvk), false)).collect())
}
