//! The policy's state between windows, as explicit bytes (sdk::state format, version 1).

use modekeeper_policy_sdk::state::{Reader, Writer};

const VERSION: u8 = 1;
/// "Never seen" for the per-kind last-seen window indexes.
pub const NEVER: u64 = u64::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Normal = 0,
    Incident = 1,
    Recover = 2,
    Relock = 3,
}

#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub phase: Phase,
    /// Window index each incident kind was last seen at (indexed by `Kind as usize`).
    pub last_seen: [u64; 4],
    /// Kinds that took part in the current (or last) incident.
    pub incident_mask: u8,
    /// Stable windows counted in RECOVER, or windows spent in RELOCK.
    pub counter: u32,
    /// Consecutive windows with p50 well above the baseline.
    pub elevated_run: u32,
    /// Per-window burst evidence, newest in bit 0.
    pub burst_history: u8,
    /// The previous window was a lone slow window (burst evidence if the median comes back).
    pub pending_slow: bool,
}

impl Default for State {
    fn default() -> Self {
        State {
            phase: Phase::Normal,
            last_seen: [NEVER; 4],
            incident_mask: 0,
            counter: 0,
            elevated_run: 0,
            burst_history: 0,
            pending_slow: false,
        }
    }
}

impl State {
    /// Decodes the bytes from the previous window; empty or unreadable bytes give the initial state.
    pub fn decode(bytes: &[u8]) -> State {
        Self::try_decode(bytes).unwrap_or_default()
    }

    fn try_decode(bytes: &[u8]) -> Option<State> {
        let mut r = Reader::new(bytes, VERSION)?;
        let phase = match r.u8()? {
            0 => Phase::Normal,
            1 => Phase::Incident,
            2 => Phase::Recover,
            3 => Phase::Relock,
            _ => return None,
        };
        let last_seen = [r.u64()?, r.u64()?, r.u64()?, r.u64()?];
        let s = State {
            phase,
            last_seen,
            incident_mask: r.u8()?,
            counter: r.u32()?,
            elevated_run: r.u32()?,
            burst_history: r.u8()?,
            pending_slow: r.u8()? != 0,
        };
        r.is_done().then_some(s)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(VERSION).u8(self.phase as u8);
        for v in self.last_seen {
            w = w.u64(v);
        }
        w.u8(self.incident_mask)
            .u32(self.counter)
            .u32(self.elevated_run)
            .u8(self.burst_history)
            .u8(u8::from(self.pending_slow))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let s = State {
            phase: Phase::Recover,
            last_seen: [1, NEVER, 7, 9],
            incident_mask: 5,
            counter: 2,
            elevated_run: 3,
            burst_history: 0b1010,
            pending_slow: true,
        };
        assert_eq!(State::decode(&s.encode()), s);
        assert_eq!(State::decode(&[]), State::default());
        assert_eq!(State::decode(&[1, 9]), State::default());
    }
}
