//! Zip archives and messages for the archive attacks of the hostile corpus and the fuzz
//! property: entries stored or deflated, and a message with an archive attached.

use base64::Engine as _;

/// A zip of `(name, contents, deflated)` entries.
pub fn zip(entries: &[(&str, &[u8], bool)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data, deflate) in entries {
        let body = if *deflate {
            miniz_oxide::deflate::compress_to_vec(data, 6)
        } else {
            data.to_vec()
        };
        let offset = out.len() as u32;
        let mut common = Vec::new();
        common.extend_from_slice(&[0, 0]); // flags
        common.extend_from_slice(&(if *deflate { 8u16 } else { 0 }).to_le_bytes());
        common.extend_from_slice(&[0; 8]); // time, date, crc
        common.extend_from_slice(&(body.len() as u32).to_le_bytes());
        common.extend_from_slice(&(data.len() as u32).to_le_bytes());
        common.extend_from_slice(&(name.len() as u16).to_le_bytes());
        common.extend_from_slice(&[0, 0]); // extra length
        out.extend_from_slice(b"PK\x03\x04\x14\x00");
        out.extend_from_slice(&common);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&body);
        central.extend_from_slice(b"PK\x01\x02\x14\x00\x14\x00");
        central.extend_from_slice(&common);
        central.extend_from_slice(&[0; 10]); // comment length, disk, attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06\0\0\0\0");
    let n = (entries.len() as u16).to_le_bytes();
    out.extend_from_slice(&n);
    out.extend_from_slice(&n);
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

/// A message from a sender that passes SPF, DKIM and DMARC with one base64 attachment.
pub fn message_with(filename: &str, content_type: &str, contents: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(contents);
    let mut body = String::with_capacity(b64.len() + b64.len() / 76 + 1024);
    for line in b64.as_bytes().chunks(76) {
        body.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        body.push_str("\r\n");
    }
    format!(
        "From: Ann Example <ann@customer.example>\r\nTo: support@example.com\r\n\
         Subject: Files\r\nMessage-ID: <files@customer.example>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"hb1\"\r\n\r\n\
         --hb1\r\nContent-Type: text/plain\r\n\r\nPlease find the files attached.\r\n\
         --hb1\r\nContent-Type: {content_type}; name=\"{filename}\"\r\n\
         Content-Disposition: attachment; filename=\"{filename}\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{body}--hb1--\r\n"
    )
    .into_bytes()
}

/// The CPU attack on name de-duplication: 10,000 entries whose 1,024-byte names share a
/// prefix (about 14 MB of mail).
pub fn many_long_names() -> Vec<u8> {
    let names: Vec<String> = (0..10_000)
        .map(|i| format!("{}{i:05}.txt", "a".repeat(1024 - 9)))
        .collect();
    let entries: Vec<(&str, &[u8], bool)> = names
        .iter()
        .map(|n| (n.as_str(), &b""[..], false))
        .collect();
    message_with("names.zip", "application/zip", &zip(&entries))
}

/// Attached messages nested `depth` deep, unencoded, `setup.exe` in the innermost.
pub fn nested_messages(depth: usize) -> Vec<u8> {
    let mut raw = String::from(
        "From: Ann Example <ann@customer.example>\r\nTo: support@example.com\r\nSubject: Fwd\r\n",
    );
    raw.push_str(&"Content-Type: message/rfc822\r\n\r\n".repeat(depth));
    raw.push_str("From: b@example.org\r\nContent-Type: application/octet-stream; name=\"setup.exe\"\r\n\r\nx\r\n");
    raw.into_bytes()
}
