//! Which clients and days a query's predicates allow.
//!
//! The scan hands every predicate back to DataFusion as inexact, so a
//! selection only has to hold every file a matching row could be in: a
//! predicate this module does not understand narrows nothing, and one it
//! does narrows to exactly the partitions it names.

use std::collections::BTreeSet;
use std::ops::Bound;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};

use super::index::Selection;
use crate::schema::{CLIENT_ID, DATE};

/// The selection every one of `filters` (a conjunction) allows.
pub(crate) fn selection(filters: &[Expr]) -> Selection {
    let mut out = Selection::all();
    for filter in filters {
        for conjunct in split_conjunction(filter) {
            narrow(&mut out, conjunct);
        }
    }
    out
}

fn narrow(out: &mut Selection, expr: &Expr) {
    if let Some(clients) = clients_of(expr) {
        out.clients = Some(match out.clients.take() {
            Some(known) => known.intersection(&clients).cloned().collect(),
            None => clients,
        });
        return;
    }
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (op, day) = match (is_column(left, DATE), is_column(right, DATE)) {
                (true, false) => match day_of(right) {
                    Some(day) => (*op, day),
                    None => return,
                },
                (false, true) => match (op.swap(), day_of(left)) {
                    (Some(op), Some(day)) => (op, day),
                    _ => return,
                },
                _ => return,
            };
            match op {
                Operator::Eq => {
                    lower(out, Bound::Included(day));
                    upper(out, Bound::Included(day));
                }
                Operator::Gt => lower(out, Bound::Excluded(day)),
                Operator::GtEq => lower(out, Bound::Included(day)),
                Operator::Lt => upper(out, Bound::Excluded(day)),
                Operator::LtEq => upper(out, Bound::Included(day)),
                _ => {}
            }
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) if is_column(expr, DATE) => {
            if let (Some(low), Some(high)) = (day_of(low), day_of(high)) {
                lower(out, Bound::Included(low));
                upper(out, Bound::Included(high));
            }
        }
        Expr::InList(InList {
            expr,
            list,
            negated: false,
        }) if is_column(expr, DATE) => {
            let days: Option<Vec<i32>> = list.iter().map(day_of).collect();
            if let Some(days) = days
                && let (Some(min), Some(max)) = (days.iter().min(), days.iter().max())
            {
                lower(out, Bound::Included(*min));
                upper(out, Bound::Included(*max));
            }
        }
        _ => {}
    }
}

/// The clients an expression allows, when it is a test of `client_id`
/// against literals (`=`, `IN`, or an `OR` of such tests).
fn clients_of(expr: &Expr) -> Option<BTreeSet<String>> {
    match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => {
            let value = match (is_column(left, CLIENT_ID), is_column(right, CLIENT_ID)) {
                (true, false) => text_of(right)?,
                (false, true) => text_of(left)?,
                _ => return None,
            };
            Some(BTreeSet::from([value]))
        }
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Or,
            right,
        }) => {
            let mut left = clients_of(left)?;
            left.extend(clients_of(right)?);
            Some(left)
        }
        Expr::InList(InList {
            expr,
            list,
            negated: false,
        }) if is_column(expr, CLIENT_ID) => list.iter().map(text_of).collect(),
        _ => None,
    }
}

/// Whether `expr` is the column `name`, possibly under casts that keep its
/// values (string encodings of a string, a date as a date).
fn is_column(expr: &Expr, name: &str) -> bool {
    match expr {
        Expr::Column(c) => c.name == name,
        Expr::Cast(cast) => {
            use arrow::datatypes::DataType;
            let keeps_values = match cast.field.data_type() {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => name == CLIENT_ID,
                DataType::Dictionary(_, value) => {
                    matches!(
                        value.as_ref(),
                        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                    ) && name == CLIENT_ID
                }
                DataType::Date32 => name == DATE,
                _ => false,
            };
            keeps_values && is_column(&cast.expr, name)
        }
        _ => false,
    }
}

fn literal(expr: &Expr) -> Option<&ScalarValue> {
    match expr {
        Expr::Literal(value, _) => Some(value),
        _ => None,
    }
}

fn text_of(expr: &Expr) -> Option<String> {
    fn text(value: &ScalarValue) -> Option<String> {
        match value {
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)) => Some(s.clone()),
            ScalarValue::Dictionary(_, inner) => text(inner),
            _ => None,
        }
    }
    text(literal(expr)?)
}

fn day_of(expr: &Expr) -> Option<i32> {
    match literal(expr)? {
        ScalarValue::Date32(Some(day)) => Some(*day),
        _ => None,
    }
}

fn lower(out: &mut Selection, bound: Bound<i32>) {
    out.from = tighter(out.from, bound, |a, b| a > b);
}

fn upper(out: &mut Selection, bound: Bound<i32>) {
    out.to = tighter(out.to, bound, |a, b| a < b);
}

/// The tighter of two bounds on the same side; `beyond(a, b)` says whether
/// day `a` is further inside the range than `b`.
fn tighter(current: Bound<i32>, new: Bound<i32>, beyond: impl Fn(i32, i32) -> bool) -> Bound<i32> {
    match (current, new) {
        (Bound::Unbounded, new) => new,
        (current, Bound::Unbounded) => current,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b))
            if a != b =>
        {
            if beyond(a, b) {
                current
            } else {
                new
            }
        }
        // Same day: exclusive is the tighter.
        (Bound::Excluded(a), _) | (_, Bound::Excluded(a)) => Bound::Excluded(a),
        (Bound::Included(a), Bound::Included(_)) => Bound::Included(a),
    }
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::DataType;
    use datafusion::logical_expr::{cast, col, lit};

    use super::*;

    fn date(day: i32) -> Expr {
        lit(ScalarValue::Date32(Some(day)))
    }

    #[test]
    fn client_and_date_predicates_narrow_and_everything_else_is_left_alone() {
        let filters = [
            col(CLIENT_ID).in_list(vec![lit("a"), lit("b")], false),
            cast(col(CLIENT_ID), DataType::Utf8).eq(lit("b")),
            col(DATE).gt_eq(date(10)).and(col(DATE).lt(date(20))),
            date(12).lt(col(DATE)),
            col("spend").gt(lit(1)),
            col(DATE).not_eq(date(15)),
        ];
        let got = selection(&filters);
        assert_eq!(got.clients, Some(BTreeSet::from(["b".to_string()])));
        assert_eq!(got.from, Bound::Excluded(12));
        assert_eq!(got.to, Bound::Excluded(20));
    }

    #[test]
    fn ors_between_and_in_lists() {
        let got = selection(&[
            col(CLIENT_ID).eq(lit("x")).or(lit("y").eq(col(CLIENT_ID))),
            col(DATE).between(date(3), date(9)),
            col(DATE).in_list(vec![date(5), date(4), date(11)], false),
        ]);
        assert_eq!(
            got.clients,
            Some(BTreeSet::from(["x".to_string(), "y".to_string()]))
        );
        assert_eq!((got.from, got.to), (Bound::Included(4), Bound::Included(9)));

        // An OR that mixes a client test with anything else narrows nothing,
        // nor do negations and casts that change the values.
        let got = selection(&[
            col(CLIENT_ID).eq(lit("x")).or(col("spend").gt(lit(1))),
            col(CLIENT_ID).in_list(vec![lit("x")], true),
            cast(col(DATE), DataType::Utf8).eq(lit("2025-01-01")),
            col(DATE).not_between(date(1), date(2)),
        ]);
        assert_eq!(got, Selection::all());
    }

    #[test]
    fn contradictions_select_nothing() {
        let got = selection(&[col(CLIENT_ID).eq(lit("a")), col(CLIENT_ID).eq(lit("b"))]);
        assert!(got.is_empty());
        let got = selection(&[col(DATE).eq(date(5)), col(DATE).gt(date(5))]);
        assert!(got.is_empty());
    }
}
