//! Results, medians and the markdown the benchmark prints.

use crate::contenders::Contender;
use std::collections::BTreeMap;
use std::fmt::Write;

pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// Rates (messages per second) per section, contender and operation, one entry per round.
#[derive(Default)]
pub struct Rates {
    /// (section, contender, op) → round → rate
    pub by_round: BTreeMap<(usize, Contender, &'static str), BTreeMap<usize, f64>>,
    pub sections: Vec<String>,
    pub counts: BTreeMap<(usize, Contender), usize>,
    pub failures: BTreeMap<(usize, Contender), String>,
}

impl Rates {
    pub fn section(&mut self, title: String) -> usize {
        if let Some(i) = self.sections.iter().position(|s| *s == title) {
            return i;
        }
        self.sections.push(title);
        self.sections.len() - 1
    }

    pub fn record(
        &mut self,
        section: usize,
        c: Contender,
        op: &'static str,
        round: usize,
        rate: f64,
    ) {
        self.by_round
            .entry((section, c, op))
            .or_default()
            .insert(round, rate);
    }

    pub fn median(&self, section: usize, c: Contender, op: &'static str) -> Option<f64> {
        median(
            &self
                .by_round
                .get(&(section, c, op))?
                .values()
                .copied()
                .collect::<Vec<_>>(),
        )
    }

    /// The median over rounds of (rate of `c` / rate of `base`), both from the same round.
    pub fn ratio(
        &self,
        section: usize,
        c: Contender,
        base: Contender,
        op: &'static str,
    ) -> Option<f64> {
        let a = self.by_round.get(&(section, c, op))?;
        let b = self.by_round.get(&(section, base, op))?;
        let ratios: Vec<f64> = a
            .iter()
            .filter_map(|(r, x)| b.get(r).map(|y| x / y))
            .collect();
        median(&ratios)
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        for (s, title) in self.sections.iter().enumerate() {
            let _ = writeln!(out, "\n#### {title}\n");
            let _ = writeln!(
                out,
                "| contender | op | msgs/s | × floor | × original | msgs/round |"
            );
            let _ = writeln!(out, "|---|---|---:|---:|---:|---:|");
            let mut contenders: Vec<Contender> = self
                .by_round
                .keys()
                .filter(|(si, _, _)| *si == s)
                .map(|(_, c, _)| *c)
                .chain(
                    self.failures
                        .keys()
                        .filter(|(si, _)| *si == s)
                        .map(|(_, c)| *c),
                )
                .collect();
            contenders.sort();
            contenders.dedup();
            for c in contenders {
                if let Some(why) = self.failures.get(&(s, c)) {
                    let _ = writeln!(
                        out,
                        "| {} | — | not run: {} | | | |",
                        c.label(),
                        one_line(why)
                    );
                    continue;
                }
                for op in ["publish", "consume+ack"] {
                    let Some(rate) = self.median(s, c, op) else {
                        continue;
                    };
                    let floor = self
                        .ratio(s, c, Contender::Floor, op)
                        .map(|r| format!("{r:.2}"))
                        .unwrap_or_default();
                    let orig = self
                        .ratio(s, c, Contender::OrigDefaults, op)
                        .map(|r| format!("{r:.1}"))
                        .unwrap_or_default();
                    let n = self
                        .counts
                        .get(&(s, c))
                        .map(|n| n.to_string())
                        .unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "| {} | {op} | {} | {floor} | {orig} | {n} |",
                        c.label(),
                        fmt_rate(rate)
                    );
                }
            }
        }
        out
    }
}

/// An error fit for a table cell: its first line, without pipes, at most 120 characters.
pub fn one_line(text: &str) -> String {
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .replace('|', "/");
    if first.chars().count() > 120 {
        format!("{}…", first.chars().take(120).collect::<String>())
    } else {
        first
    }
}

pub fn fmt_rate(r: f64) -> String {
    if r >= 100.0 {
        format!("{:.0}", r)
    } else {
        format!("{:.1}", r)
    }
}

/// One target of the issue: what was asked, what was measured, and the verdict.
pub struct Target {
    pub what: String,
    pub measured: String,
    pub pass: Option<bool>,
}

pub fn targets_markdown(targets: &[Target]) -> String {
    let mut out =
        String::from("\n### Targets\n\n| target | measured (median) | verdict |\n|---|---|---|\n");
    for t in targets {
        let verdict = match t.pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None if t.measured.starts_with("not run") || t.measured == "—" => "not measured",
            None => "for reference",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {verdict} |",
            t.what,
            one_line(&t.measured)
        );
    }
    out
}
