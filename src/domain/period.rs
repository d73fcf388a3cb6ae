//! Bimonthly supervision periods: `YYYY-P1` is January-February ... `YYYY-P6` is November-December.

use crate::error::{Error, Result};
use chrono::{Datelike, NaiveDate};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    pub year: i32,
    /// 1..=6
    pub index: u8,
}

impl Period {
    /// Periods in a year.
    pub const PER_YEAR: i32 = 6;

    pub fn new(year: i32, index: u8) -> Result<Self> {
        if !(1..=6).contains(&index) {
            return Err(Error::usage(
                format!("period index {index} is out of range"),
                "periods are YYYY-P1 (Jan-Feb) to YYYY-P6 (Nov-Dec)",
            ));
        }
        Ok(Period { year, index })
    }

    pub(crate) fn containing(date: NaiveDate) -> Self {
        Period {
            year: date.year(),
            index: (date.month0() / 2 + 1) as u8,
        }
    }

    pub fn first_day(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, u32::from(self.index) * 2 - 1, 1).expect("valid")
    }

    pub fn last_day(self) -> NaiveDate {
        self.next().first_day().pred_opt().expect("valid")
    }

    pub fn contains(self, date: NaiveDate) -> bool {
        Period::containing(date) == self
    }

    pub fn next(self) -> Self {
        self.offset(1)
    }

    pub(crate) fn prev(self) -> Self {
        self.offset(-1)
    }

    /// The period `n` steps later (negative: earlier).
    pub fn offset(self, n: i32) -> Self {
        let linear = self.year * 6 + i32::from(self.index) - 1 + n;
        Period {
            year: linear.div_euclid(6),
            index: (linear.rem_euclid(6) + 1) as u8,
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-P{}", self.year, self.index)
    }
}

impl FromStr for Period {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::usage(
                format!("`{s}` is not a period"),
                "write periods as YYYY-Pn with n from 1 (Jan-Feb) to 6 (Nov-Dec), e.g. 2026-P3",
            )
        };
        let (year, idx) = s.split_once("-P").ok_or_else(bad)?;
        let year: i32 = year.parse().map_err(|_| bad())?;
        let idx: u8 = idx.parse().map_err(|_| bad())?;
        if !(1970..=2200).contains(&year) || !(1..=6).contains(&idx) {
            return Err(bad());
        }
        Period::new(year, idx)
    }
}

impl serde::Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any text is a period or a clean error; a period prints back as it was read.
        #[test]
        fn any_text_is_a_period_or_a_clean_error(s in "\\PC{0,12}") {
            if let Ok(p) = s.parse::<Period>() {
                proptest::prop_assert_eq!(p.to_string().parse::<Period>().unwrap(), p);
            }
        }

        #[test]
        fn period_like_text_never_panics(y in 0u32..100_000, n in 0u32..100) {
            let _ = format!("{y}-P{n}").parse::<Period>();
        }
    }

    #[test]
    fn parses_and_prints() {
        let p: Period = "2026-P3".parse().unwrap();
        assert_eq!(
            p,
            Period {
                year: 2026,
                index: 3
            }
        );
        assert_eq!(p.to_string(), "2026-P3");
        assert!("2026-P7".parse::<Period>().is_err());
        assert!("2026P3".parse::<Period>().is_err());
        assert!("300000-P1".parse::<Period>().is_err());
    }

    #[test]
    fn date_ranges_cover_the_year() {
        let p1: Period = "2025-P1".parse().unwrap();
        assert_eq!(p1.first_day(), NaiveDate::from_ymd_opt(2025, 1, 1).unwrap());
        assert_eq!(p1.last_day(), NaiveDate::from_ymd_opt(2025, 2, 28).unwrap());
        let p6 = p1.offset(5);
        assert_eq!(p6.to_string(), "2025-P6");
        assert_eq!(
            p6.last_day(),
            NaiveDate::from_ymd_opt(2025, 12, 31).unwrap()
        );
        assert_eq!(p6.next().to_string(), "2026-P1");
        assert_eq!(p1.prev().to_string(), "2024-P6");
        assert_eq!(
            Period::containing(NaiveDate::from_ymd_opt(2024, 4, 30).unwrap()).to_string(),
            "2024-P2"
        );
    }
}
