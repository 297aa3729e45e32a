//! Cost analytics over a date range: totals, by type, chart series (by day, by GPU type, by
//! job), the most expensive jobs, how estimates compared with what was billed, and the records
//! themselves (also as CSV). Days are the user's: a record belongs to the calendar day of its
//! `created_at` in the requested time zone, both ends of the range included.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[cfg(feature = "ssr")]
use crate::db::Db;
use crate::validation::FieldErrors;

/// The longest range a report covers.
const MAX_DAYS: i64 = 3 * 366;

/// How the `series` of a report is grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    #[default]
    Day,
    Gpu,
    Job,
    Type,
}

/// A named range, today included: the original's `week`, `month` and `year` (the last 7, 30
/// and 365 days), the last 90 days, and the calendar month so far or the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Week,
    Month,
    Quarter,
    Year,
    ThisMonth,
    LastMonth,
}

impl Period {
    pub fn parse(name: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
    }
}

/// What a report asks for, as the API and the page send it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CostQuery {
    pub start_date: Option<NaiveDate>,
    pub end_date: Option<NaiveDate>,
    pub period: Option<Period>,
    #[serde(default)]
    pub group_by: GroupBy,
    /// An IANA time zone (`Europe/Paris`), kept as the account's; the account's when absent.
    pub tz: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct CostRecordView {
    pub id: Uuid,
    pub job_id: Uuid,
    pub cost_type: String,
    pub amount: f64,
    pub gpu_type: Option<String>,
    pub gpu_count: Option<i32>,
    pub seconds: Option<f64>,
    pub rate_per_s: Option<f64>,
    /// The record's day in the report's time zone.
    pub date: NaiveDate,
    pub dataset_name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct SeriesPoint {
    pub key: String,
    pub label: String,
    pub amount: f64,
}

/// One job's billed cost against its estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct JobCost {
    pub job_id: Uuid,
    pub dataset_name: String,
    pub gpu_type: Option<String>,
    pub actual: f64,
    pub estimated: Option<f64>,
    /// actual / estimated.
    pub ratio: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct CostReport {
    pub start_date: NaiveDate,
    pub end_date: NaiveDate,
    pub time_zone: String,
    pub group_by: GroupBy,
    pub total: f64,
    /// `compute`, `storage`, `transfer` → dollars (every type present, zero included).
    pub cost_by_type: BTreeMap<String, f64>,
    /// Grouped by `group_by`.
    pub series: Vec<SeriesPoint>,
    /// Every day of the range, zero included (the daily chart).
    pub by_day: Vec<SeriesPoint>,
    pub by_gpu: Vec<SeriesPoint>,
    /// Most expensive first, at most 10.
    pub top_jobs: Vec<JobCost>,
    /// The median of actual / estimate over the range's jobs with an estimate and a cost.
    pub median_estimate_ratio: Option<f64>,
    pub records: Vec<CostRecordView>,
}

#[cfg(feature = "ssr")]
#[derive(Debug, thiserror::Error)]
pub enum CostError {
    #[error("invalid report: {0}")]
    Invalid(FieldErrors),
    #[error("database error on costs: {0}")]
    Db(#[from] sqlx::Error),
}

#[cfg(feature = "ssr")]
impl crate::error::Classify for CostError {
    fn kind(&self) -> crate::error::ErrorKind {
        match self {
            Self::Invalid(fields) => crate::error::ErrorKind::Invalid(fields.clone()),
            Self::Db(_) => crate::error::ErrorKind::Internal,
        }
    }
}

/// The range a query means, given today's date in its zone.
pub fn resolve_range(
    q: &CostQuery,
    today: NaiveDate,
) -> Result<(NaiveDate, NaiveDate), FieldErrors> {
    let mut errors = FieldErrors::new();
    let (start, end) = match (q.period, q.start_date, q.end_date) {
        (Some(period), None, None) => {
            let first = |d: NaiveDate| d.with_day(1).unwrap_or(d);
            let last_days = |n: i64| (today - chrono::Duration::days(n - 1), today);
            match period {
                Period::Week => last_days(7),
                Period::Month => last_days(30),
                Period::Quarter => last_days(90),
                Period::Year => last_days(365),
                Period::ThisMonth => (first(today), today),
                Period::LastMonth => {
                    let end = first(today).pred_opt().unwrap_or(today);
                    (first(end), end)
                }
            }
        }
        (Some(_), _, _) => {
            errors.add("period", "Send a period or a start and end date, not both.");
            (today, today)
        }
        (None, start, end) => {
            let end = end.unwrap_or(today);
            // The month so far by default.
            let start = start.unwrap_or_else(|| end.with_day(1).unwrap_or(end));
            (start, end)
        }
    };
    if start > end {
        errors.add(
            "start_date",
            "The start date must be on or before the end date.",
        );
    } else if (end - start).num_days() >= MAX_DAYS {
        errors.add("start_date", "A report covers at most three years.");
    }
    errors.into_result().map(|()| (start, end))
}

/// The median of `values` (not empty).
#[cfg_attr(not(feature = "ssr"), allow(dead_code))]
fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

#[cfg(feature = "ssr")]
pub async fn report(db: &Db, user: Uuid, q: &CostQuery) -> Result<CostReport, CostError> {
    let mut tx = db.tenant(user).await?;
    // The zone the browser sent becomes the account's; without one, the account's.
    let (tz, today) = match q.tz.as_deref().filter(|t| !t.is_empty()) {
        Some(tz) => match crate::costs::limits::set_time_zone(&mut tx, user, tz).await? {
            Some(today) => (tz.to_owned(), today),
            None => {
                let mut errors = FieldErrors::new();
                errors.add("tz", crate::costs::limits::zone_error(tz));
                return Err(CostError::Invalid(errors));
            }
        },
        None => crate::costs::limits::time_zone(&mut tx, user).await?,
    };
    let (start, end) = resolve_range(q, today).map_err(CostError::Invalid)?;
    let rows = sqlx::query!(
        r#"SELECT c.id, c.job_id, c.cost_type, c.amount::float8 AS "amount!", c.gpu_type, c.gpu_count,
                  c.seconds, c.rate_per_s::float8 AS rate_per_s,
                  (c.created_at AT TIME ZONE $2)::date AS "date!",
                  d.name AS dataset_name, j.estimated_total_cost::float8 AS estimated
             FROM cost_records c
             JOIN training_jobs j ON j.id = c.job_id
             JOIN datasets d ON d.id = j.dataset_id
            WHERE c.user_id = $1
              AND (c.created_at AT TIME ZONE $2)::date BETWEEN $3 AND $4
            ORDER BY c.created_at, c.cost_type"#,
        user,
        tz,
        start,
        end
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;

    let mut cost_by_type: BTreeMap<String, f64> = ["compute", "storage", "transfer"]
        .into_iter()
        .map(|t| (t.to_owned(), 0.0))
        .collect();
    let mut by_day: BTreeMap<NaiveDate, f64> = start
        .iter_days()
        .take_while(|d| *d <= end)
        .map(|d| (d, 0.0))
        .collect();
    let mut by_gpu: BTreeMap<String, f64> = BTreeMap::new();
    let mut jobs: BTreeMap<Uuid, JobCost> = BTreeMap::new();
    let mut records = Vec::with_capacity(rows.len());
    for r in rows {
        *cost_by_type.entry(r.cost_type.clone()).or_default() += r.amount;
        *by_day.entry(r.date).or_default() += r.amount;
        let job = jobs.entry(r.job_id).or_insert_with(|| JobCost {
            job_id: r.job_id,
            dataset_name: r.dataset_name.clone(),
            gpu_type: None,
            actual: 0.0,
            estimated: r.estimated,
            ratio: None,
        });
        job.actual += r.amount;
        if r.gpu_type.is_some() {
            job.gpu_type = r.gpu_type.clone();
            *by_gpu
                .entry(r.gpu_type.clone().unwrap_or_default())
                .or_default() += r.amount;
        }
        records.push(CostRecordView {
            id: r.id,
            job_id: r.job_id,
            cost_type: r.cost_type,
            amount: r.amount,
            gpu_type: r.gpu_type,
            gpu_count: r.gpu_count,
            seconds: r.seconds,
            rate_per_s: r.rate_per_s,
            date: r.date,
            dataset_name: r.dataset_name,
        });
    }
    for job in jobs.values_mut() {
        job.ratio = job.estimated.filter(|e| *e > 0.0).map(|e| job.actual / e);
    }
    let point = |key: String, label: String, amount: f64| SeriesPoint { key, label, amount };
    let by_day: Vec<SeriesPoint> = by_day
        .into_iter()
        .map(|(d, a)| point(d.to_string(), d.format("%b %-d").to_string(), a))
        .collect();
    let by_gpu: Vec<SeriesPoint> = by_gpu
        .into_iter()
        .map(|(g, a)| point(g.clone(), g, a))
        .collect();
    let mut top_jobs: Vec<JobCost> = jobs.values().cloned().collect();
    top_jobs.sort_by(|a, b| b.actual.total_cmp(&a.actual));
    let series = match q.group_by {
        GroupBy::Day => by_day.clone(),
        GroupBy::Gpu => by_gpu.clone(),
        GroupBy::Job => top_jobs
            .iter()
            .map(|j| point(j.job_id.to_string(), j.dataset_name.clone(), j.actual))
            .collect(),
        GroupBy::Type => cost_by_type
            .iter()
            .map(|(t, a)| point(t.clone(), t.clone(), *a))
            .collect(),
    };
    let median_estimate_ratio = median(jobs.values().filter_map(|j| j.ratio).collect());
    top_jobs.truncate(10);
    Ok(CostReport {
        start_date: start,
        end_date: end,
        time_zone: tz,
        group_by: q.group_by,
        total: cost_by_type.values().sum(),
        cost_by_type,
        series,
        by_day,
        by_gpu,
        top_jobs,
        median_estimate_ratio,
        records,
    })
}

/// The report's records as CSV (one line per record, the JSON's fields).
pub fn to_csv(report: &CostReport) -> String {
    fn field(s: &str) -> String {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    }
    let mut out = String::from(
        "date,job_id,dataset_name,cost_type,amount,gpu_type,gpu_count,seconds,rate_per_s\n",
    );
    for r in &report.records {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            r.date,
            r.job_id,
            field(&r.dataset_name),
            r.cost_type,
            r.amount,
            field(r.gpu_type.as_deref().unwrap_or("")),
            r.gpu_count.map(|c| c.to_string()).unwrap_or_default(),
            r.seconds.map(|s| s.to_string()).unwrap_or_default(),
            r.rate_per_s.map(|s| s.to_string()).unwrap_or_default(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_from_periods_and_dates() {
        let today = day("2026-12-01");
        let q = |period, start: Option<&str>, end: Option<&str>| CostQuery {
            period,
            start_date: start.map(day),
            end_date: end.map(day),
            ..Default::default()
        };
        assert_eq!(
            resolve_range(&q(Some(Period::Week), None, None), today),
            Ok((day("2026-11-25"), today))
        );
        assert_eq!(
            resolve_range(&q(Some(Period::Month), None, None), today)
                .unwrap()
                .0,
            day("2026-11-02")
        );
        assert_eq!(
            resolve_range(&q(None, None, None), today),
            Ok((today, today)),
            "the month so far"
        );
        assert_eq!(
            resolve_range(&q(None, None, Some("2026-10-20")), today),
            Ok((day("2026-10-01"), day("2026-10-20")))
        );
        assert!(resolve_range(&q(None, Some("2026-12-02"), Some("2026-12-01")), today).is_err());
        assert!(resolve_range(&q(Some(Period::Week), Some("2026-11-01"), None), today).is_err());
        assert!(resolve_range(&q(None, Some("2020-01-01"), None), today).is_err());
        let march = day("2026-03-15");
        assert_eq!(
            resolve_range(&q(Some(Period::LastMonth), None, None), march),
            Ok((day("2026-02-01"), day("2026-02-28")))
        );
        assert_eq!(
            resolve_range(&q(Some(Period::ThisMonth), None, None), march),
            Ok((day("2026-03-01"), march))
        );
        assert_eq!(
            resolve_range(&q(Some(Period::Quarter), None, None), march)
                .unwrap()
                .0,
            day("2025-12-16")
        );
        assert_eq!(Period::parse("last_month"), Some(Period::LastMonth));
        assert_eq!(Period::parse("fortnight"), None);
    }

    #[test]
    fn medians_and_csv_quoting() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![1.0, 4.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
        let report = CostReport {
            start_date: day("2026-12-01"),
            end_date: day("2026-12-01"),
            time_zone: "UTC".into(),
            group_by: GroupBy::Day,
            total: 0.5,
            cost_by_type: BTreeMap::new(),
            series: vec![],
            by_day: vec![],
            by_gpu: vec![],
            top_jobs: vec![],
            median_estimate_ratio: None,
            records: vec![CostRecordView {
                id: Uuid::nil(),
                job_id: Uuid::nil(),
                cost_type: "compute".into(),
                amount: 0.5,
                gpu_type: Some("L4".into()),
                gpu_count: Some(1),
                seconds: Some(10.0),
                rate_per_s: Some(0.05),
                date: day("2026-12-01"),
                dataset_name: "a, \"b\"".into(),
            }],
        };
        assert_eq!(
            to_csv(&report).lines().nth(1).unwrap(),
            "2026-12-01,00000000-0000-0000-0000-000000000000,\"a, \"\"b\"\"\",compute,0.5,L4,1,10,0.05"
        );
    }
}
