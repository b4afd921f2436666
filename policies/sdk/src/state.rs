//! A tiny, explicit byte format for policy state: a version byte, then fixed-width little-endian
//! fields in an order the policy chooses. No serde, so components stay small and the bytes are stable
//! across toolchains (replays compare them).

/// Appends fields to a state buffer.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new(version: u8) -> Self {
        Writer { buf: vec![version] }
    }
    pub fn u8(mut self, v: u8) -> Self {
        self.buf.push(v);
        self
    }
    pub fn u32(mut self, v: u32) -> Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(mut self, v: u64) -> Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn i64(mut self, v: i64) -> Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn f64(mut self, v: f64) -> Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads fields back; any short or mismatched buffer makes every read fail, so a policy falls back
/// to its initial state instead of misreading bytes.
#[derive(Debug)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// `None` when `bytes` is empty or was written with another version.
    pub fn new(bytes: &'a [u8], version: u8) -> Option<Self> {
        match bytes.split_first() {
            Some((v, rest)) if *v == version => Some(Reader { rest }),
            _ => None,
        }
    }
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        if self.rest.len() < N {
            return None;
        }
        let (head, tail) = self.rest.split_at(N);
        self.rest = tail;
        head.try_into().ok()
    }
    pub fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    pub fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    pub fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
    pub fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_le_bytes)
    }
    pub fn f64(&mut self) -> Option<f64> {
        self.take().map(f64::from_le_bytes)
    }
    /// True when every byte was consumed.
    pub fn is_done(&self) -> bool {
        self.rest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version_mismatch() {
        let b = Writer::new(3)
            .u8(7)
            .u32(9)
            .u64(11)
            .i64(-5)
            .f64(0.25)
            .finish();
        let mut r = Reader::new(&b, 3).unwrap();
        assert_eq!(
            (r.u8(), r.u32(), r.u64(), r.i64(), r.f64()),
            (Some(7), Some(9), Some(11), Some(-5), Some(0.25))
        );
        assert!(r.is_done());
        assert!(r.u8().is_none());
        assert!(Reader::new(&b, 4).is_none());
        assert!(Reader::new(&[], 3).is_none());
    }
}
