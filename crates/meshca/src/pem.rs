//! PEM decoding and encoding (RFC 7468) with errors that name the file.

use crate::error::{Error, Result};

/// One decoded PEM block.
pub(crate) struct Block {
    pub(crate) label: String,
    pub(crate) der: zeroize::Zeroizing<Vec<u8>>,
}

/// Splits `data` into PEM blocks. Text between blocks (comments, `openssl x509 -text` output)
/// is ignored, as OpenSSL and Go do.
pub(crate) fn decode_all(file: &str, expected: &'static str, data: &[u8]) -> Result<Vec<Block>> {
    let text = std::str::from_utf8(data).map_err(|_| Error::Pem {
        file: file.to_owned(),
        expected,
        detail: "the file is not text (is it DER? convert with `openssl x509 -inform der`)".into(),
    })?;
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start..];
        let label_end = after[11..].find("-----").ok_or_else(|| Error::Pem {
            file: file.to_owned(),
            expected,
            detail: "unterminated BEGIN line".into(),
        })? + 11;
        let label = &after[11..label_end];
        let end_marker = format!("-----END {label}-----");
        let end = after.find(&end_marker).ok_or_else(|| Error::Pem {
            file: file.to_owned(),
            expected,
            detail: format!("block `{label}` has no END line"),
        })? + end_marker.len();
        let block_text = &after[..end];
        if block_text.contains("Proc-Type:") && block_text.contains("ENCRYPTED") {
            // Legacy OpenSSL encryption headers; RFC 7468 decoders refuse them with a vague error.
            return Err(Error::EncryptedKey { file: file.to_owned() });
        }
        let (decoded_label, der) = pem_rfc7468::decode_vec(block_text.as_bytes()).map_err(|e| Error::Pem {
            file: file.to_owned(),
            expected,
            detail: format!("block `{label}`: {e}"),
        })?;
        blocks.push(Block { label: decoded_label.to_owned(), der: der.into() });
        rest = &after[end..];
    }
    if blocks.is_empty() {
        return Err(Error::EmptyPem { file: file.to_owned(), expected });
    }
    Ok(blocks)
}

/// Encodes DER as a PEM block with `label`, LF line endings.
pub(crate) fn encode(label: &str, der: &[u8]) -> String {
    pem_rfc7468::encode_string(label, pem_rfc7468::LineEnding::LF, der)
        .unwrap_or_else(|_| unreachable!("PEM encoding of in-memory DER with a static label cannot fail"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_text_between_blocks_and_keeps_order() {
        let a = encode("CERTIFICATE", &[1, 2, 3]);
        let b = encode("CERTIFICATE", &[4, 5]);
        let data = format!("Certificate:\n  Data: ...\n{a}garbage\n{b}");
        let blocks = decode_all("x.pem", "CERTIFICATE", data.as_bytes()).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(&blocks[0].der[..], &[1, 2, 3]);
        assert_eq!(&blocks[1].der[..], &[4, 5]);
    }

    #[test]
    fn empty_and_binary_input_name_the_file() {
        let e = decode_all("root-cert.pem", "CERTIFICATE", b"").err().unwrap();
        assert!(matches!(e, Error::EmptyPem { ref file, .. } if file == "root-cert.pem"), "{e}");
        let e = decode_all("ca-cert.pem", "CERTIFICATE", &[0x30, 0x82, 0xff, 0xfe]).err().unwrap();
        assert!(e.to_string().starts_with("ca-cert.pem: not valid PEM"), "{e}");
    }

    #[test]
    fn truncated_block_is_an_error() {
        let a = encode("CERTIFICATE", &[1, 2, 3]);
        let cut = &a[..a.len() - 10];
        let e = decode_all("c.pem", "CERTIFICATE", cut.as_bytes()).err().unwrap();
        assert!(matches!(e, Error::Pem { .. }), "{e}");
    }
}
