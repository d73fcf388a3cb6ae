//! How much of the watched land a period saw.
//!
//! Takes, pixel by pixel, the county (its 1-based index in the job) and whether any clear
//! observation of the period saw the pixel; only watched farmland counts, since a cloud over a
//! lake hides no change. Gives per county and for the job the watched pixels and the share
//! seen clear, and the counties whose share is too low for the period to be committed: no
//! patch where nothing was seen is not a finding, and committing it would replace a county's
//! earlier results with an empty look.

use std::collections::BTreeMap;

/// Watched pixels of a county and those a clear observation saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    pub watched: u64,
    pub clear: u64,
}

impl Seen {
    /// The share of watched land seen clear; `None` without watched land.
    pub fn share(&self) -> Option<f64> {
        (self.watched > 0).then(|| self.clear as f64 / self.watched as f64)
    }
}

/// Coverage of a tile or of a whole period, by county index. Tiles merge by addition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    by_county: BTreeMap<u16, Seen>,
}

impl Coverage {
    /// Counts one watched pixel of county `county` (1-based).
    pub fn add(&mut self, county: u16, clear: bool) {
        let s = self.by_county.entry(county).or_default();
        s.watched += 1;
        s.clear += u64::from(clear);
    }

    pub fn merge(&mut self, other: &Coverage) {
        for (&c, s) in &other.by_county {
            let mine = self.by_county.entry(c).or_default();
            mine.watched += s.watched;
            mine.clear += s.clear;
        }
    }

    /// The county's counts (zero when it holds no watched pixel).
    pub fn county(&self, county: u16) -> Seen {
        self.by_county.get(&county).copied().unwrap_or_default()
    }

    /// All counties together.
    pub fn total(&self) -> Seen {
        self.by_county.values().fold(Seen::default(), |a, s| Seen {
            watched: a.watched + s.watched,
            clear: a.clear + s.clear,
        })
    }

    /// Counties with watched land of which nothing was seen clear, or less than `floor` of
    /// it; ascending.
    pub fn short_of(&self, floor: f64) -> Vec<u16> {
        self.by_county
            .iter()
            .filter(|(_, s)| s.watched > 0 && (s.clear == 0 || s.share() < Some(floor)))
            .map(|(&c, _)| c)
            .collect()
    }

    /// Bytes for a tile checkpoint: entries of county (u16), watched and clear (u64).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = (self.by_county.len() as u64).to_le_bytes().to_vec();
        for (c, s) in &self.by_county {
            out.extend_from_slice(&c.to_le_bytes());
            out.extend_from_slice(&s.watched.to_le_bytes());
            out.extend_from_slice(&s.clear.to_le_bytes());
        }
        out
    }

    /// The inverse of [`Coverage::to_bytes`] at the start of `b`: the coverage and the bytes
    /// it took; `None` when they do not hold one.
    pub fn from_bytes(b: &[u8]) -> Option<(Coverage, usize)> {
        let count = u64::from_le_bytes(b.get(..8)?.try_into().ok()?) as usize;
        let len = 8usize.checked_add(count.checked_mul(18)?)?;
        let entries = b.get(8..len)?;
        let by_county = entries
            .chunks_exact(18)
            .map(|e| {
                let u64_at = |o: usize| u64::from_le_bytes(e[o..o + 8].try_into().expect("8"));
                (
                    u16::from_le_bytes([e[0], e[1]]),
                    Seen {
                        watched: u64_at(2),
                        clear: u64_at(10),
                    },
                )
            })
            .collect();
        Some((Coverage { by_county }, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counties_short_of_the_floor_are_named_and_tiles_merge() {
        let mut a = Coverage::default();
        let mut b = Coverage::default();
        for i in 0..100 {
            a.add(1, i < 90);
            b.add(2, i < 5);
        }
        b.add(1, true);
        a.merge(&b);
        assert_eq!(
            a.county(1),
            Seen {
                watched: 101,
                clear: 91
            }
        );
        assert_eq!(a.total().watched, 201);
        assert_eq!(a.short_of(0.0), Vec::<u16>::new());
        assert_eq!(a.short_of(0.5), vec![2]);
        let mut c = Coverage::default();
        c.add(3, false);
        assert_eq!(c.short_of(0.0), vec![3], "nothing seen is always short");
        assert_eq!(Seen::default().share(), None);
    }

    #[test]
    fn bytes_round_trip_and_refuse_what_does_not_fit() {
        let mut a = Coverage::default();
        a.add(7, true);
        a.add(2, false);
        let mut bytes = a.to_bytes();
        bytes.extend_from_slice(b"rest");
        let (back, used) = Coverage::from_bytes(&bytes).unwrap();
        assert_eq!(back, a);
        assert_eq!(&bytes[used..], b"rest");
        assert!(Coverage::from_bytes(&bytes[..20]).is_none());
        assert!(Coverage::from_bytes(&u64::MAX.to_le_bytes()).is_none());
    }
}
