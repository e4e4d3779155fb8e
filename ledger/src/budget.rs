//! Privacy budgets on the ledger: how `SetBudget` and `SubmitQuery` carry them, so the budget
//! is charged in the same ledger step that admits the query.
//!
//! The accounting itself is [`medtech_noise::Accountant`]; the ledger's state machine feeds it
//! every applied entry in log order, so every member (and an auditor replaying an export)
//! derives the same budgets, and two queries racing for the last of a budget are settled by
//! the log's order: the second is rejected, never both admitted.
//!
//! Encodings (both JSON, so an auditor reads them as they are):
//! * `SetBudget.subject`: `researcher:<id>`, `dataset:<id>` or `global`; `SetBudget.limit`: a
//!   [`Cost`] (`{"epsilon":1000000,"rho":0,"delta":0}`, ε and ρ in millionths, δ in 10⁻¹⁸).
//! * `SubmitQuery.cost`: a [`QueryCharge`] — the dataset read and the cost charged.
//!
//! The ledger cannot parse the application's query, so it cannot tell whether the declared
//! cost is the query's real cost: each committee node recomputes the cost from the query and
//! refuses to contribute, add noise or decrypt when they differ (the query then fails with
//! its budget charged).

use medtech_noise::{Cost, Subject};
use serde::{Deserialize, Serialize};

pub use medtech_noise::{Accountant, ChargeRecord, Event, Rejection as BudgetRejection};

/// What a `SubmitQuery` entry charges.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryCharge {
    /// The dataset the query reads (the federation's joint dataset, or one hospital's).
    pub dataset: String,
    /// The cost charged against the researcher, the dataset and the global limit.
    pub cost: Cost,
}

impl QueryCharge {
    /// The bytes of `SubmitQuery.cost`.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising a struct of strings and integers to JSON cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses `SubmitQuery.cost`.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("query cost does not decode: {e}"))
    }
}

/// The `SetBudget.subject` string of a subject.
pub fn subject_to_string(s: &Subject) -> String {
    match s {
        Subject::Researcher(r) => format!("researcher:{r}"),
        Subject::Dataset(d) => format!("dataset:{d}"),
        Subject::Global => "global".into(),
    }
}

/// Parses a `SetBudget.subject` string.
pub fn parse_subject(s: &str) -> Result<Subject, String> {
    if s == "global" {
        return Ok(Subject::Global);
    }
    match s.split_once(':') {
        Some(("researcher", id)) if !id.is_empty() => Ok(Subject::Researcher(id.into())),
        Some(("dataset", id)) if !id.is_empty() => Ok(Subject::Dataset(id.into())),
        _ => Err(format!(
            "budget subject {s:?} is not researcher:<id>, dataset:<id> or global"
        )),
    }
}

/// The bytes of `SetBudget.limit`.
pub fn encode_limit(limit: &Cost) -> Vec<u8> {
    serde_json::to_vec(limit).unwrap_or_default()
}

/// Parses `SetBudget.limit`.
pub fn decode_limit(bytes: &[u8]) -> Result<Cost, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("budget limit does not decode: {e}"))
}

/// The accountant event of a `SetBudget` entry.
pub fn limit_event(subject: &str, limit: &[u8]) -> Result<Event, String> {
    Ok(Event::SetLimit {
        subject: parse_subject(subject)?,
        limit: decode_limit(limit)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use medtech_noise::Micros;

    #[test]
    fn subjects_round_trip_and_garbage_is_refused() {
        for s in [
            Subject::Researcher("r1".into()),
            Subject::Dataset("federation".into()),
            Subject::Global,
        ] {
            assert_eq!(parse_subject(&subject_to_string(&s)).unwrap(), s);
        }
        for bad in ["", "researcher:", "researcher", "hospital:x", "GLOBAL"] {
            assert!(parse_subject(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn charges_and_limits_round_trip() {
        let c = QueryCharge {
            dataset: "federation".into(),
            cost: Cost {
                epsilon: Micros(250_000),
                ..Cost::default()
            },
        };
        assert_eq!(QueryCharge::decode(&c.encode()).unwrap(), c);
        assert_eq!(decode_limit(&encode_limit(&c.cost)).unwrap(), c.cost);
        assert!(QueryCharge::decode(b"{\"dataset\":1}").is_err());
        assert!(decode_limit(b"").is_err());
    }
}
