//! `/api/costs`: analytics over a date range in the caller's time zone, as JSON or CSV.

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use engine::costs::report::{self, CostQuery, CostReport, GroupBy, Period};
use engine::validation::FieldErrors;
use serde::Deserialize;

use crate::auth::CurrentUser;
use crate::error::{ApiError, Envelope, ErrorBody, ok};
use crate::state::AppState;

/// `/api/costs`.
pub fn router() -> super::Api {
    super::Api::new().route("/api/costs", axum::routing::get(costs))
}

/// The query as sent: every field a string, so each bad one gets its own message.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RawQuery {
    /// YYYY-MM-DD, included; default: the month's first day.
    start_date: Option<String>,
    /// YYYY-MM-DD, included; default: today.
    end_date: Option<String>,
    /// week, month, quarter, year, this_month or last_month (instead of dates).
    period: Option<String>,
    /// day (default), gpu, job or type.
    group_by: Option<String>,
    /// An IANA time zone (`Europe/Paris`); becomes the account's.
    tz: Option<String>,
    /// json (default) or csv.
    format: Option<String>,
}

fn parse(raw: &RawQuery) -> Result<(CostQuery, bool), FieldErrors> {
    let mut errors = FieldErrors::new();
    let mut date = |field: &str, value: &Option<String>| {
        let value = value.as_deref().filter(|v| !v.is_empty())?;
        match value.parse() {
            Ok(d) => Some(d),
            Err(_) => {
                errors.add(field, "Use a date as YYYY-MM-DD.");
                None
            }
        }
    };
    let start_date = date("start_date", &raw.start_date);
    let end_date = date("end_date", &raw.end_date);
    let period = match raw.period.as_deref().filter(|v| !v.is_empty()) {
        None => None,
        Some(name) => {
            let period = Period::parse(name);
            if period.is_none() {
                errors.add(
                    "period",
                    "Use week, month, quarter, year, this_month or last_month.",
                );
            }
            period
        }
    };
    let group_by = match raw.group_by.as_deref().filter(|v| !v.is_empty()) {
        None | Some("day") => GroupBy::Day,
        Some("gpu") => GroupBy::Gpu,
        Some("job") => GroupBy::Job,
        Some("type") => GroupBy::Type,
        Some(_) => {
            errors.add("group_by", "Use day, gpu, job or type.");
            GroupBy::Day
        }
    };
    let csv = match raw.format.as_deref().filter(|v| !v.is_empty()) {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => {
            errors.add("format", "Use json or csv.");
            false
        }
    };
    errors.into_result().map(|()| {
        (
            CostQuery {
                start_date,
                end_date,
                period,
                group_by,
                tz: raw.tz.clone(),
            },
            csv,
        )
    })
}

/// `GET /api/costs?start_date&end_date&period&group_by&tz&format`: every cost record whose day
/// (in the account's time zone) falls in the range, both ends included, with totals and series.
#[utoipa::path(get, path = "/api/costs", tag = "costs", params(RawQuery),
    responses((status = 200, body = Envelope<CostReport>, description = "JSON; with `format=csv`, the records as `text/csv`."),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn costs(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Query(raw): Query<RawQuery>,
) -> Result<Response, ApiError> {
    let (query, csv) = parse(&raw).map_err(ApiError::Validation)?;
    let report = report::report(&state.db, user.id, &query).await?;
    if csv {
        let name = format!("costs-{}-{}.csv", report.start_date, report.end_date);
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{name}\""),
                ),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
            ],
            report::to_csv(&report),
        )
            .into_response());
    }
    Ok(ok(report).into_response())
}
