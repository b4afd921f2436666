//! A minimal ustar writer (POSIX.1-1988): regular files only, for support bundles. No links, no
//! devices, no extended headers; names up to 255 bytes (the `prefix` field), which the bundle's
//! relative paths stay within.

use std::io::{self, Write};

const BLOCK: usize = 512;

/// Writes regular-file entries; [`TarWriter::finish`] writes the end-of-archive blocks.
pub struct TarWriter<W: Write> {
    w: W,
}

fn octal(field: &mut [u8], value: u64) -> io::Result<()> {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    if s.len() > digits {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a tar header value does not fit",
        ));
    }
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
    Ok(())
}

/// Splits `path` into ustar's `prefix` (≤ 155 bytes) and `name` (≤ 100 bytes) at a `/`.
fn split_name(path: &str) -> Option<(&str, &str)> {
    if path.len() <= 100 {
        return Some(("", path));
    }
    let bytes = path.as_bytes();
    (0..bytes.len())
        .filter(|&i| bytes[i] == b'/')
        .find(|&i| i <= 155 && path.len() - i - 1 <= 100 && i > 0)
        .map(|i| (&path[..i], &path[i + 1..]))
}

impl<W: Write> TarWriter<W> {
    pub fn new(w: W) -> TarWriter<W> {
        TarWriter { w }
    }

    /// One regular file, mode 0644, owned by uid/gid 0, modified at `mtime` (epoch seconds).
    pub fn append(&mut self, path: &str, data: &[u8], mtime: u64) -> io::Result<()> {
        if path.is_empty() || path.starts_with('/') || path.split('/').any(|c| c == "..") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not a relative path inside the archive: {path:?}"),
            ));
        }
        let (prefix, name) = split_name(path).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a path too long for a tar header: {path:?}"),
            )
        })?;
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut h[100..108], 0o644)?;
        octal(&mut h[108..116], 0)?;
        octal(&mut h[116..124], 0)?;
        octal(&mut h[124..136], data.len() as u64)?;
        octal(&mut h[136..148], mtime)?;
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
        // The checksum is computed with its own field as spaces.
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        self.w.write_all(&h)?;
        self.w.write_all(data)?;
        let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
        self.w.write_all(&[0u8; BLOCK][..pad])
    }

    /// Two zero blocks, then the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.w.write_all(&[0u8; 2 * BLOCK])?;
        Ok(self.w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_padding() {
        let mut t = TarWriter::new(Vec::new());
        t.append("a/b.json", b"{}\n", 1_700_000_000).unwrap();
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(90));
        t.append(&long, b"x", 0).unwrap();
        let bytes = t.finish().unwrap();
        assert_eq!(bytes.len(), 512 * 6);
        assert_eq!(&bytes[..8], b"a/b.json");
        assert_eq!(&bytes[257..262], b"ustar");
        let sum: u64 = bytes[..512]
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(*b)
                }
            })
            .sum();
        let field = std::str::from_utf8(&bytes[148..154]).unwrap();
        assert_eq!(u64::from_str_radix(field, 8).unwrap(), sum);
        assert_eq!(
            &bytes[1024 + 345..1024 + 345 + 120],
            "d".repeat(120).as_bytes()
        );
        assert!(TarWriter::new(Vec::new()).append("../x", b"", 0).is_err());
        assert!(TarWriter::new(Vec::new()).append("/etc/x", b"", 0).is_err());
        let too_long = "x".repeat(300);
        assert!(
            TarWriter::new(Vec::new())
                .append(&too_long, b"", 0)
                .is_err()
        );
    }
}
