//! A minimal DER writer: enough to build the simulated TEE's certificates and CRLs (and test
//! fixtures) with the exact structures AMD uses. Parsing is done by `x509-parser`.

use crate::time::UnixTime;

fn len_bytes(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// A TLV with the given tag.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    len_bytes(content.len(), &mut out);
    out.extend_from_slice(content);
    out
}

/// SEQUENCE of already-encoded parts.
pub fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

/// SET of already-encoded parts (caller orders them; one element in our uses).
pub fn set(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x31, &parts.concat())
}

/// Context-specific constructed tag `[n]` (EXPLICIT).
pub fn explicit(n: u8, content: &[u8]) -> Vec<u8> {
    tlv(0xa0 | n, content)
}

/// INTEGER from an unsigned big-endian magnitude.
pub fn uint(magnitude: &[u8]) -> Vec<u8> {
    let trimmed: &[u8] = {
        let skip = magnitude.iter().take_while(|&&b| b == 0).count();
        &magnitude[skip.min(magnitude.len().saturating_sub(1))..]
    };
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.is_empty() {
        content.push(0);
    } else {
        if trimmed[0] & 0x80 != 0 {
            content.push(0);
        }
        content.extend_from_slice(trimmed);
    }
    tlv(0x02, &content)
}

/// INTEGER from a `u64`.
pub fn uint64(value: u64) -> Vec<u8> {
    uint(&value.to_be_bytes())
}

/// OBJECT IDENTIFIER from its arcs.
pub fn oid(arcs: &[u64]) -> Vec<u8> {
    let mut content = vec![(arcs[0] * 40 + arcs[1]) as u8];
    for &arc in &arcs[2..] {
        let mut stack = vec![(arc & 0x7f) as u8];
        let mut rest = arc >> 7;
        while rest > 0 {
            stack.push(0x80 | (rest & 0x7f) as u8);
            rest >>= 7;
        }
        content.extend(stack.iter().rev());
    }
    tlv(0x06, &content)
}

/// NULL.
pub fn null() -> Vec<u8> {
    vec![0x05, 0x00]
}

/// BIT STRING with no unused bits.
pub fn bit_string(bytes: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(bytes.len() + 1);
    content.push(0);
    content.extend_from_slice(bytes);
    tlv(0x03, &content)
}

/// OCTET STRING.
pub fn octet_string(bytes: &[u8]) -> Vec<u8> {
    tlv(0x04, bytes)
}

/// IA5String.
pub fn ia5(text: &str) -> Vec<u8> {
    tlv(0x16, text.as_bytes())
}

/// UTF8String.
pub fn utf8(text: &str) -> Vec<u8> {
    tlv(0x0c, text.as_bytes())
}

/// UTCTime for 1950–2049, GeneralizedTime otherwise (RFC 5280 §4.1.2.5).
pub fn time(t: UnixTime) -> Vec<u8> {
    let dt = time::OffsetDateTime::from_unix_timestamp(t.0).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let (y, mo, d, h, mi, s) = (dt.year(), u8::from(dt.month()), dt.day(), dt.hour(), dt.minute(), dt.second());
    if (1950..2050).contains(&y) {
        tlv(0x17, format!("{:02}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z", y % 100).as_bytes())
    } else {
        tlv(0x18, format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z").as_bytes())
    }
}

/// An X.501 Name with the given (attribute OID, UTF8 value) pairs, one RDN each.
pub fn name(attrs: &[(&[u64], &str)]) -> Vec<u8> {
    let rdns: Vec<Vec<u8>> = attrs.iter().map(|(o, v)| set(&[&seq(&[&oid(o), &utf8(v)])])).collect();
    let refs: Vec<&[u8]> = rdns.iter().map(Vec::as_slice).collect();
    seq(&refs)
}

/// Well-known OIDs.
pub mod oids {
    /// commonName
    pub const CN: &[u64] = &[2, 5, 4, 3];
    /// organizationName
    pub const O: &[u64] = &[2, 5, 4, 10];
    /// organizationalUnitName
    pub const OU: &[u64] = &[2, 5, 4, 11];
    /// rsaEncryption
    pub const RSA_ENCRYPTION: &[u64] = &[1, 2, 840, 113549, 1, 1, 1];
    /// id-RSASSA-PSS
    pub const RSASSA_PSS: &[u64] = &[1, 2, 840, 113549, 1, 1, 10];
    /// id-mgf1
    pub const MGF1: &[u64] = &[1, 2, 840, 113549, 1, 1, 8];
    /// id-sha384
    pub const SHA384: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 2];
    /// id-ecPublicKey
    pub const EC_PUBLIC_KEY: &[u64] = &[1, 2, 840, 10045, 2, 1];
    /// secp384r1
    pub const SECP384R1: &[u64] = &[1, 3, 132, 0, 34];
    /// ecdsa-with-SHA384
    pub const ECDSA_SHA384: &[u64] = &[1, 2, 840, 10045, 4, 3, 3];
}

/// AlgorithmIdentifier for RSASSA-PSS with SHA-384, MGF1-SHA-384, salt 48 (as AMD writes it).
pub fn rsassa_pss_sha384() -> Vec<u8> {
    let sha384 = seq(&[&oid(oids::SHA384)]);
    let mgf1 = seq(&[&oid(oids::MGF1), &sha384]);
    let params =
        seq(&[&explicit(0, &sha384), &explicit(1, &mgf1), &explicit(2, &uint64(48)), &explicit(3, &uint64(1))]);
    seq(&[&oid(oids::RSASSA_PSS), &params])
}

/// Reads one TLV strictly: a low-number tag, a definite length in minimal form. Returns
/// (tag, content, rest).
pub fn read_tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let (&tag, rest) = input.split_first().ok_or("truncated DER: no tag")?;
    if tag & 0x1f == 0x1f {
        return Err("high-number DER tags are not used here".into());
    }
    let (&first, rest) = rest.split_first().ok_or("truncated DER: no length")?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err("indefinite, oversized or truncated DER length".into());
        }
        let len = rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        if rest[0] == 0 || len < 0x80 {
            return Err("non-minimal DER length".into());
        }
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err("truncated DER content".into());
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// Checks the unsigned envelope of a certificate or CRL strictly: exactly
/// `SEQUENCE { tbs SEQUENCE, algorithm SEQUENCE, signature BIT STRING }` with nothing after, and
/// the outer algorithm byte-identical to the one inside the signed part (the field after the
/// optional version and, for certificates, the serial number).
pub fn check_signed_envelope(der: &[u8], is_certificate: bool) -> Result<(), String> {
    let (tag, content, rest) = read_tlv(der)?;
    if tag != 0x30 || !rest.is_empty() {
        return Err("not exactly one DER SEQUENCE".into());
    }
    let (tbs_tag, tbs, after_tbs) = read_tlv(content)?;
    let (alg_tag, _, after_alg) = read_tlv(after_tbs)?;
    let outer_alg = &after_tbs[..after_tbs.len() - after_alg.len()];
    let (sig_tag, _, after_sig) = read_tlv(after_alg)?;
    if tbs_tag != 0x30 || alg_tag != 0x30 || sig_tag != 0x03 || !after_sig.is_empty() {
        return Err("the signed envelope is not SEQUENCE { SEQUENCE, SEQUENCE, BIT STRING }".into());
    }
    // Inside the signed part: [0] version (certificates) or INTEGER version (CRLs, optional),
    // then the serial number (certificates), then the algorithm.
    let mut fields = tbs;
    let (tag, _, rest) = read_tlv(fields)?;
    if (is_certificate && tag == 0xa0) || (!is_certificate && tag == 0x02) {
        fields = rest;
    }
    if is_certificate {
        let (tag, _, rest) = read_tlv(fields)?;
        if tag != 0x02 {
            return Err("the serial number is not an INTEGER".into());
        }
        fields = rest;
    }
    let (_, _, after_inner) = read_tlv(fields)?;
    let inner_alg = &fields[..fields.len() - after_inner.len()];
    if inner_alg != outer_alg {
        return Err("the outer signature algorithm is not byte-identical to the signed one".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(uint64(0), [0x02, 0x01, 0x00]);
        assert_eq!(uint64(0x80), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(uint(&[0, 0, 1]), [0x02, 0x01, 0x01]);
        assert_eq!(oid(&[1, 2, 840, 113549]), [0x06, 0x06, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]);
        assert_eq!(tlv(0x04, &[0u8; 200])[..3], [0x04, 0x81, 200]);
        assert_eq!(tlv(0x04, &[0u8; 300])[..4], [0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(time(UnixTime(1_748_736_000)), tlv(0x17, b"250601000000Z"));
        assert_eq!(time(UnixTime(2_556_057_600))[0], 0x18, "2051 needs GeneralizedTime");
    }
}
