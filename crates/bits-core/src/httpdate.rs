//! HTTP dates (`Sun, 06 Nov 1994 08:49:37 GMT`, the IMF-fixdate every
//! sender must use, RFC 9110 §5.6.7): for `Retry-After` and for giving a
//! downloaded file the server's `Last-Modified` time, as BITS does.

use std::time::{Duration, SystemTime};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Parses an IMF-fixdate; the obsolete RFC 850 and asctime forms give `None`.
pub(crate) fn parse(text: &str) -> Option<SystemTime> {
    let (_weekday, rest) = text.trim().split_once(", ")?;
    let parts: Vec<&str> = rest.split_whitespace().collect();
    let [day, month, year, time, "GMT"] = parts[..] else {
        return None;
    };
    let day: u32 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    let month = MONTHS.iter().position(|m| *m == month)? as u32 + 1;
    let year: i64 = year.parse().ok().filter(|y| (1970..=9999).contains(y))?;
    let mut hms = time.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some() || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// `Retry-After`: delay-seconds, or an HTTP date (seconds from `now`,
/// rounded up, 0 when past).
pub(crate) fn retry_after(text: &str, now: SystemTime) -> Option<u64> {
    let text = text.trim();
    if let Ok(secs) = text.parse() {
        return Some(secs);
    }
    let at = parse(text)?;
    let wait = at.duration_since(now).unwrap_or_default();
    Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(t: SystemTime) -> u64 {
        t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn imf_fixdates() {
        assert_eq!(
            parse("Sun, 06 Nov 1994 08:49:37 GMT").map(secs),
            Some(784_111_777)
        );
        assert_eq!(parse("Thu, 01 Jan 1970 00:00:00 GMT").map(secs), Some(0));
        assert_eq!(
            parse("Tue, 29 Feb 2000 23:59:59 GMT").map(secs),
            Some(951_868_799)
        );
        assert_eq!(
            parse("Thu, 26 Nov 2026 05:00:00 GMT").map(secs),
            Some(1_795_669_200)
        );
        for bad in [
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06 Nov 1994 08:49:37 CET",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn retry_after_seconds_or_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_700);
        assert_eq!(retry_after(" 120 ", now), Some(120));
        assert_eq!(retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now), Some(77));
        assert_eq!(retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now), Some(0));
        assert_eq!(retry_after("soon", now), None);
    }
}
