//! Metric expressions: arithmetic over base measures, as written in the
//! built-in definitions and in per-client configuration files.
//!
//! The grammar is deliberately small: numbers, measure names, `+ - * /`,
//! unary minus and parentheses. Every division is compiled so that a zero
//! denominator gives NULL, and every operand is a sum over the rows of the
//! requested grain, so a ratio is always a ratio of sums.

use std::collections::BTreeSet;

/// A parsed metric expression.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricExpr {
    /// A numeric constant.
    Number(f64),
    /// A base measure, summed at the query's grain.
    Measure(String),
    /// `-e`.
    Neg(Box<MetricExpr>),
    /// A binary operation.
    Binary(Box<MetricExpr>, Op, Box<MetricExpr>),
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`, NULL when the denominator is 0.
    Div,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(f64),
    Ident(String),
    Op(char),
    Open,
    Close,
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() || c == '.' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let s: String = chars[start..i].iter().collect();
            let n = s
                .parse::<f64>()
                .map_err(|_| format!("'{s}' is not a number"))?;
            tokens.push(Token::Number(n));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(Token::Ident(chars[start..i].iter().collect()));
        } else if matches!(c, '+' | '-' | '*' | '/') {
            tokens.push(Token::Op(c));
            i += 1;
        } else if c == '(' {
            tokens.push(Token::Open);
            i += 1;
        } else if c == ')' {
            tokens.push(Token::Close);
            i += 1;
        } else {
            return Err(format!(
                "unexpected character '{c}' (allowed: measure names, numbers, + - * / and parentheses)"
            ));
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn sum(&mut self) -> Result<MetricExpr, String> {
        let mut left = self.product()?;
        while let Some(Token::Op(c @ ('+' | '-'))) = self.peek() {
            let op = if *c == '+' { Op::Add } else { Op::Sub };
            self.pos += 1;
            let right = self.product()?;
            left = MetricExpr::Binary(Box::new(left), op, Box::new(right));
        }
        Ok(left)
    }

    fn product(&mut self) -> Result<MetricExpr, String> {
        let mut left = self.unary()?;
        while let Some(Token::Op(c @ ('*' | '/'))) = self.peek() {
            let op = if *c == '*' { Op::Mul } else { Op::Div };
            self.pos += 1;
            let right = self.unary()?;
            left = MetricExpr::Binary(Box::new(left), op, Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<MetricExpr, String> {
        match self.next() {
            Some(Token::Op('-')) => Ok(MetricExpr::Neg(Box::new(self.unary()?))),
            Some(Token::Number(n)) => Ok(MetricExpr::Number(n)),
            Some(Token::Ident(name)) => Ok(MetricExpr::Measure(name)),
            Some(Token::Open) => {
                let inner = self.sum()?;
                match self.next() {
                    Some(Token::Close) => Ok(inner),
                    _ => Err("missing ')'".into()),
                }
            }
            Some(Token::Close) => Err("unexpected ')'".into()),
            Some(Token::Op(c)) => Err(format!("unexpected operator '{c}'")),
            None => Err("unexpected end of expression".into()),
        }
    }
}

impl MetricExpr {
    /// Parses `text`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let tokens = tokenize(text)?;
        if tokens.is_empty() {
            return Err("empty expression".into());
        }
        let mut parser = Parser { tokens, pos: 0 };
        let expr = parser.sum()?;
        if parser.pos < parser.tokens.len() {
            return Err(format!(
                "unexpected {:?} after a complete expression",
                parser.tokens[parser.pos]
            ));
        }
        Ok(expr)
    }

    /// The measure names the expression uses.
    pub fn measures(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.collect(&mut out);
        out
    }

    fn collect(&self, out: &mut BTreeSet<String>) {
        match self {
            Self::Number(_) => {}
            Self::Measure(m) => {
                out.insert(m.clone());
            }
            Self::Neg(e) => e.collect(out),
            Self::Binary(a, _, b) => {
                a.collect(out);
                b.collect(out);
            }
        }
    }

    /// SQL over the summed measure columns: `measure(name)` gives the SQL of
    /// one summed measure. Every division yields NULL on a zero denominator.
    pub fn to_sql(&self, measure: &dyn Fn(&str) -> String) -> String {
        match self {
            Self::Number(n) => format!("CAST({n:?} AS DOUBLE)"),
            Self::Measure(m) => format!("CAST({} AS DOUBLE)", measure(m)),
            Self::Neg(e) => format!("(- {})", e.to_sql(measure)),
            Self::Binary(a, op, b) => {
                let (a, b) = (a.to_sql(measure), b.to_sql(measure));
                match op {
                    Op::Add => format!("({a} + {b})"),
                    Op::Sub => format!("({a} - {b})"),
                    Op::Mul => format!("({a} * {b})"),
                    Op::Div => format!("({a} / NULLIF({b}, CAST(0 AS DOUBLE)))"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_parentheses() {
        let e = MetricExpr::parse("1000 * spend / impressions").unwrap();
        assert_eq!(
            e,
            MetricExpr::Binary(
                Box::new(MetricExpr::Binary(
                    Box::new(MetricExpr::Number(1000.0)),
                    Op::Mul,
                    Box::new(MetricExpr::Measure("spend".into()))
                )),
                Op::Div,
                Box::new(MetricExpr::Measure("impressions".into()))
            )
        );
        let e = MetricExpr::parse("(conversion_value - spend) / -spend").unwrap();
        assert_eq!(
            e.measures().into_iter().collect::<Vec<_>>(),
            ["conversion_value", "spend"]
        );
    }

    #[test]
    fn malformed_expressions_say_why() {
        for (text, want) in [
            ("", "empty"),
            ("spend /", "end of expression"),
            ("(spend", "missing ')'"),
            ("spend)", "after a complete expression"),
            ("spend % 2", "unexpected character '%'"),
            ("1..2", "not a number"),
        ] {
            let err = MetricExpr::parse(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
