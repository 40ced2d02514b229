//! Hex and random keys: the store keys of subject hashes and digest links, and the ids and
//! fingerprints written as hex.

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of lower- or upper-case hex; a pair that is not hex is skipped.
pub fn unhex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .filter_map(|i| text.get(i * 2..i * 2 + 2))
        .filter_map(|pair| u8::from_str_radix(pair, 16).ok())
        .collect()
}

/// A new 32-byte key from the operating system's randomness; `what` names it in the error.
pub fn random_key(what: &str) -> Result<[u8; 32], String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for the {what}: {e}"))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_goes_both_ways_and_keys_differ() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
        assert_eq!(unhex("000fff"), [0, 15, 255]);
        assert_eq!(unhex(&hex(b"mailroom")), b"mailroom");
        assert_ne!(random_key("test").unwrap(), random_key("test").unwrap());
    }
}
