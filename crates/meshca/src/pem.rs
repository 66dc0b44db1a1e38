//! PEM decoding and encoding with errors that name the file.
//!
//! Decoding reads what istiod (Go's `encoding/pem`) and OpenSSL read, not only strict RFC 7468:
//! base64 at any line length (64 columns from openssl, 76 from `base64` and MIME tools, one
//! long line), CRLF line ends, trailing white space, RFC 1421 headers, and text before, between
//! and after blocks. What stays strict: a BEGIN line starts a line, its END line names the same
//! label, labels are RFC 7468 labels, the base64 is canonical with padding, and encrypted
//! legacy keys are refused by name.

use crate::error::{Error, Result};

/// The largest input meshca parses as one file, in bytes (16 MiB). A Kubernetes Secret holds at
/// most 1 MiB, and a trust bundle of 10,000 RSA-4096 roots is about 20 MiB of PEM; anything
/// bigger is a mistake or an attack, refused before any work.
pub const MAX_INPUT_BYTES: usize = 16 * 1024 * 1024;

/// The most PEM blocks meshca reads from one file.
pub const MAX_PEM_BLOCKS: usize = 10_000;

/// One decoded PEM block.
pub(crate) struct Block {
    pub(crate) label: String,
    pub(crate) der: zeroize::Zeroizing<Vec<u8>>,
}

const BEGIN: &str = "-----BEGIN ";
const END: &str = "-----END ";
const DASHES: &str = "-----";

/// Splits `data` into PEM blocks, in order. Text outside blocks (comments, `openssl x509 -text`
/// output) is ignored, as OpenSSL and Go do.
pub(crate) fn decode_all(file: &str, expected: &'static str, data: &[u8]) -> Result<Vec<Block>> {
    let bad = |detail: String| Error::Pem { file: file.to_owned(), expected, detail };
    if data.len() > MAX_INPUT_BYTES {
        return Err(Error::InputTooLarge { file: file.to_owned(), size: data.len(), limit: MAX_INPUT_BYTES });
    }
    let text = std::str::from_utf8(data)
        .map_err(|_| bad("the file is not text (is it DER? convert with `openssl x509 -inform der`)".into()))?;
    let mut blocks = Vec::new();
    let mut lines = Lines { text, pos: 0 };
    while let Some(line) = lines.next_line() {
        let Some(label) = line.trim_end().strip_prefix(BEGIN).and_then(|l| l.strip_suffix(DASHES)) else {
            continue;
        };
        if !valid_label(label) {
            return Err(bad(format!("`{BEGIN}{label}{DASHES}` does not carry a valid PEM label")));
        }
        if blocks.len() == MAX_PEM_BLOCKS {
            return Err(Error::TooManyPemBlocks { file: file.to_owned(), limit: MAX_PEM_BLOCKS });
        }
        let index = blocks.len() + 1;
        let mut body = zeroize::Zeroizing::new(String::new());
        let mut encrypted = false;
        let mut in_headers = true;
        let mut ended = false;
        while let Some(line) = lines.next_line() {
            let line = line.trim_end();
            if let Some(end) = line.strip_prefix(END) {
                if end.strip_suffix(DASHES) != Some(label) {
                    return Err(bad(format!("block #{index} `{label}` ends with `{line}`")));
                }
                ended = true;
                break;
            }
            if line.starts_with(BEGIN) {
                return Err(bad(format!("block #{index} `{label}` has no END line before the next BEGIN")));
            }
            // RFC 1421 headers (`Name: value`) come first, then a blank line; base64 never holds ':'.
            if in_headers && line.contains(':') {
                encrypted |= line.starts_with("Proc-Type:") && line.contains("ENCRYPTED");
                continue;
            }
            in_headers = false;
            body.extend(line.chars().filter(|c| !c.is_ascii_whitespace()));
        }
        if !ended {
            return Err(bad(format!("block #{index} `{label}` has no END line")));
        }
        if encrypted {
            // Legacy OpenSSL encryption; istiod cannot read an encrypted key either.
            return Err(Error::EncryptedKey { file: file.to_owned() });
        }
        use base64ct::Encoding;
        let der = base64ct::Base64::decode_vec(&body)
            .map_err(|_| bad(format!("block #{index} `{label}` is not valid base64")))?;
        blocks.push(Block { label: label.to_owned(), der: der.into() });
    }
    if blocks.is_empty() {
        return Err(Error::EmptyPem { file: file.to_owned(), expected });
    }
    Ok(blocks)
}

/// RFC 7468 section 3: printable ASCII, no leading or trailing space or '-', not empty.
fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !label.starts_with([' ', '-'])
        && !label.ends_with([' ', '-'])
}

/// Lines ending in `\n`, `\r\n` or end of text, without the line end.
struct Lines<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Lines<'a> {
    fn next_line(&mut self) -> Option<&'a str> {
        let rest = self.text.get(self.pos..).filter(|r| !r.is_empty())?;
        let (line, used) = match rest.find('\n') {
            Some(i) => (&rest[..i], i + 1),
            None => (rest, rest.len()),
        };
        self.pos += used;
        Some(line.strip_suffix('\r').unwrap_or(line))
    }
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
    fn reads_every_line_length_crlf_trailing_space_and_headers() {
        let der: Vec<u8> = (0..=255u8).cycle().take(300).collect();
        use base64ct::Encoding;
        let b64 = base64ct::Base64::encode_string(&der);
        let wrap = |cols: usize, eol: &str| {
            let lines: Vec<&str> =
                b64.as_bytes().chunks(cols).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
            format!("-----BEGIN CERTIFICATE-----{eol}{}{eol}-----END CERTIFICATE-----{eol}", lines.join(eol))
        };
        for (cols, eol) in [(64, "\n"), (76, "\n"), (76, "\r\n"), (b64.len(), "\n"), (1, "\n")] {
            let blocks = decode_all("x.pem", "CERTIFICATE", wrap(cols, eol).as_bytes()).unwrap();
            assert_eq!(&blocks[0].der[..], &der[..], "{cols} columns, {eol:?}");
        }
        let spaced = wrap(64, "  \t\n");
        assert_eq!(&decode_all("x.pem", "CERTIFICATE", spaced.as_bytes()).unwrap()[0].der[..], &der[..]);
        let with_header = wrap(64, "\n").replacen("-----\n", "-----\nComment: made by hand\n\n", 1);
        assert_eq!(&decode_all("x.pem", "CERTIFICATE", with_header.as_bytes()).unwrap()[0].der[..], &der[..]);
        // No final newline.
        let no_eol = wrap(64, "\n");
        assert!(decode_all("x.pem", "CERTIFICATE", no_eol.trim_end().as_bytes()).is_ok());
    }

    #[test]
    fn labels_and_base64_stay_strict() {
        let a = encode("CERTIFICATE", &[1, 2, 3]);
        for (bad, needle) in [
            (a.replace("END CERTIFICATE", "END PRIVATE KEY"), "ends with"),
            (a.replace("AQID", "AQI*"), "not valid base64"),
            (a.replace("AQID", "AQ"), "not valid base64"),
            (a.replace("BEGIN CERTIFICATE", "BEGIN -X"), "valid PEM label"),
            (format!("{}\n{a}", a.replace("-----END CERTIFICATE-----\n", "")), "no END line before"),
        ] {
            let e = decode_all("c.pem", "CERTIFICATE", bad.as_bytes()).err().unwrap().to_string();
            assert!(e.contains(needle), "{bad:?}: {e}");
        }
        // A BEGIN that does not start a line is text, not a block (as in Go).
        let inline = "x -----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n";
        let e = decode_all("c.pem", "CERTIFICATE", inline.as_bytes()).err().unwrap();
        assert!(matches!(e, Error::EmptyPem { .. }), "{e}");
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

    #[test]
    fn size_and_block_count_are_bounded() {
        let big = vec![b' '; MAX_INPUT_BYTES + 1];
        let e = decode_all("big.pem", "CERTIFICATE", &big).err().unwrap();
        assert!(matches!(e, Error::InputTooLarge { .. }), "{e}");
        assert!(e.to_string().contains("16 MiB"), "{e}");
        let many = encode("CERTIFICATE", &[1]).repeat(MAX_PEM_BLOCKS + 1);
        let e = decode_all("many.pem", "CERTIFICATE", many.as_bytes()).err().unwrap();
        assert!(matches!(e, Error::TooManyPemBlocks { limit: MAX_PEM_BLOCKS, .. }), "{e}");
        let max = encode("CERTIFICATE", &[1]).repeat(MAX_PEM_BLOCKS);
        assert_eq!(decode_all("max.pem", "CERTIFICATE", max.as_bytes()).unwrap().len(), MAX_PEM_BLOCKS);
    }
}
