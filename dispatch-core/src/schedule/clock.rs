//! When a schedule's ticks fall. A tick is named by its scheduled wall-clock time, in
//! milliseconds since the Unix epoch, a point of the schedule's grid (multiples of the interval,
//! or the cron expression's times): every host names it the same, however far off its clock,
//! which is what lets hosts sharing a Redis claim each tick once. A skewed clock only fires
//! the tick late or early; the claim's key outlives the tick long enough to catch that.

use super::ScheduleError;
use crate::settings::Trigger;
use jiff::{tz::TimeZone, Timestamp, Zoned};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A trigger, parsed once.
#[derive(Debug, Clone)]
pub(crate) enum Clock {
    /// Every so many milliseconds (at least 1), aligned to the epoch.
    Every(u64),
    /// A cron expression in a zone.
    Cron(Box<croner::Cron>, TimeZone),
}

impl Clock {
    /// Parses `trigger`.
    pub(crate) fn new(trigger: &Trigger) -> Result<Clock, ScheduleError> {
        match trigger {
            Trigger::Every(every) => {
                let ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
                if ms == 0 {
                    return Err(ScheduleError::ZeroInterval);
                }
                Ok(Clock::Every(ms))
            }
            Trigger::Cron { expr, zone } => {
                let cron = croner::parser::CronParser::builder()
                    .seconds(croner::parser::Seconds::Optional)
                    .build()
                    .parse(expr)
                    .map_err(|e| ScheduleError::Cron {
                        expr: expr.clone(),
                        message: e.to_string(),
                    })?;
                // UTC needs no database: a host without tzdata still runs UTC schedules.
                let tz = if zone.eq_ignore_ascii_case("UTC") {
                    TimeZone::UTC
                } else {
                    TimeZone::get(zone)
                        .map_err(|_| ScheduleError::TimeZone { zone: zone.clone() })?
                };
                Ok(Clock::Cron(Box::new(cron), tz))
            }
        }
    }

    /// The first tick strictly after `after_ms`; `None` when a cron expression never fires
    /// again.
    pub(crate) fn next_after(&self, after_ms: u64) -> Option<u64> {
        match self {
            Clock::Every(every) => Some((after_ms / every + 1).saturating_mul(*every)),
            Clock::Cron(cron, tz) => {
                let next = cron
                    .find_next_occurrence(&zoned(after_ms, tz)?, false)
                    .ok()?;
                u64::try_from(next.timestamp().as_millisecond()).ok()
            }
        }
    }

    /// The latest tick at or before `at_ms` (the tick an `immediate` run stands for).
    pub(crate) fn current(&self, at_ms: u64) -> Option<u64> {
        match self {
            Clock::Every(every) => Some(at_ms / every * every),
            Clock::Cron(cron, tz) => {
                let prev = cron
                    .find_previous_occurrence(&zoned(at_ms, tz)?, true)
                    .ok()?;
                u64::try_from(prev.timestamp().as_millisecond()).ok()
            }
        }
    }

    /// How long after one tick the next one falls, about (for deadlines of waiting ticks).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn period_after(&self, tick_ms: u64) -> Duration {
        let next = self.next_after(tick_ms).unwrap_or(tick_ms + 60_000);
        Duration::from_millis(next.saturating_sub(tick_ms).max(1))
    }
}

/// The instant `ms` after the epoch, in `tz`; `None` past jiff's range (year ±9999).
fn zoned(ms: u64, tz: &TimeZone) -> Option<Zoned> {
    let at = Timestamp::from_millisecond(i64::try_from(ms).ok()?).ok()?;
    Some(at.to_zoned(tz.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_aligned_to_the_epoch() {
        let c = Clock::new(&Trigger::Every(Duration::from_millis(200))).unwrap();
        assert_eq!(c.next_after(1_000), Some(1_200));
        assert_eq!(c.next_after(1_199), Some(1_200));
        assert_eq!(c.current(1_199), Some(1_000));
        assert!(Clock::new(&Trigger::Every(Duration::ZERO)).is_err());
    }

    #[test]
    fn cron_in_a_time_zone() {
        let c = Clock::new(&Trigger::Cron {
            expr: "0 30 9 * * *".into(),
            zone: "Europe/Paris".into(),
        })
        .unwrap();
        // 2026-01-01T00:00:00Z; 09:30 in Paris (UTC+1 in winter) is 08:30Z.
        let midnight = 1_767_225_600_000;
        assert_eq!(
            c.next_after(midnight),
            Some(midnight + 8 * 3_600_000 + 1_800_000)
        );
        let every_2s = Clock::new(&Trigger::Cron {
            expr: "*/2 * * * * *".into(),
            zone: "UTC".into(),
        })
        .unwrap();
        assert_eq!(every_2s.next_after(midnight), Some(midnight + 2_000));
        assert!(Clock::new(&Trigger::Cron {
            expr: "nonsense".into(),
            zone: "UTC".into()
        })
        .is_err());
        assert!(Clock::new(&Trigger::Cron {
            expr: "* * * * *".into(),
            zone: "Mars/Olympus".into()
        })
        .is_err());
    }
}
