//! `ddmq top`: the farm's dashboard. Each refresh surveys every shown queue from directory
//! listings only (waiting, in flight, dead; no message is read), and compares the names with
//! the previous refresh's: a name seen for the first time (waiting or in flight) was published,
//! a name that left the waiting list (or is in flight and was never seen waiting) was consumed.
//! A message published and finished between two refreshes is seen by neither: the rates count
//! what the listings show, which is all of it for a queue that holds work between refreshes.

mod render;

pub use render::{render_json, render_table};

use crate::engine::{self, Broker, Survey, WaitingName};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

/// One queue's row.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueRow {
    pub queue: String,
    pub waiting: usize,
    pub in_flight: usize,
    pub dead: usize,
    /// Messages per second over the last interval (None on the first look).
    pub published_per_s: Option<f64>,
    pub consumed_per_s: Option<f64>,
    /// Seconds since the longest-waiting message was written.
    pub oldest_waiting_age: Option<f64>,
    /// Seconds until the queue is empty at the current consume rate (waiting and in flight).
    pub eta: Option<f64>,
}

/// One refresh.
#[derive(Clone, Debug)]
pub struct Report {
    pub time: SystemTime,
    /// Seconds the rates were measured over (None on the first look).
    pub interval: Option<f64>,
    pub rows: Vec<QueueRow>,
    /// What this refresh cost.
    pub refresh_time: Duration,
}

/// The dashboard's state between refreshes: the previous look at each queue.
pub struct Dashboard {
    broker: Broker,
    /// The queues asked for; empty: all, as they come and go.
    wanted: Vec<String>,
    previous: HashMap<String, (Instant, Survey)>,
}

impl Dashboard {
    pub fn new(broker: Broker, wanted: Vec<String>) -> Dashboard {
        Dashboard {
            broker,
            wanted,
            previous: HashMap::new(),
        }
    }

    /// Looks at every shown queue once. Queues asked for but missing are left out (a queue
    /// may be created later); so are queues deleted while we look.
    pub fn refresh(&mut self) -> engine::Result<Report> {
        let started = Instant::now();
        let time = SystemTime::now();
        let names = if self.wanted.is_empty() {
            self.broker.list_queues()?
        } else {
            self.wanted.clone()
        };
        let mut rows = Vec::with_capacity(names.len());
        let mut interval = None;
        let mut seen = HashMap::with_capacity(names.len());
        for name in names {
            let survey = match self.broker.with_queue(&name, |q| q.survey()) {
                Ok(s) => s,
                Err(engine::Error::NoSuchQueue(_)) | Err(engine::Error::NotAQueue(_)) => continue,
                Err(e) => return Err(e),
            };
            let now = Instant::now();
            let rates = self.previous.get(&name).map(|(then, before)| {
                let secs = now.duration_since(*then).as_secs_f64().max(1e-3);
                interval = Some(secs);
                let (published, consumed) = flows(before, &survey);
                (published as f64 / secs, consumed as f64 / secs)
            });
            let oldest_waiting_age = survey
                .oldest_waiting_since
                .map(|t| time.duration_since(t).unwrap_or_default().as_secs_f64());
            let left = survey.waiting.len() + survey.in_flight.len();
            let eta = match rates {
                Some((_, consumed)) if consumed > 0.0 => Some(left as f64 / consumed),
                _ if left == 0 => Some(0.0),
                _ => None,
            };
            rows.push(QueueRow {
                queue: name.clone(),
                waiting: survey.waiting.len(),
                in_flight: survey.in_flight.len(),
                dead: survey.dead,
                published_per_s: rates.map(|r| r.0),
                consumed_per_s: rates.map(|r| r.1),
                oldest_waiting_age,
                eta,
            });
            seen.insert(name, (now, survey));
        }
        self.previous = seen;
        Ok(Report {
            time,
            interval,
            rows,
            refresh_time: started.elapsed(),
        })
    }
}

/// (published, consumed) between two looks at a queue, from the names alone.
fn flows(before: &Survey, now: &Survey) -> (usize, usize) {
    let known = [&before.waiting[..], &before.in_flight[..]];
    let new_waiting = count_absent(&now.waiting, &known);
    let new_in_flight = count_absent(&now.in_flight, &known);
    let left_waiting = count_absent(&before.waiting, &[&now.waiting[..]]);
    (new_waiting + new_in_flight, left_waiting + new_in_flight)
}

/// How many names of `names` are in none of `others` (all sorted): one merge pass.
fn count_absent(names: &[WaitingName], others: &[&[WaitingName]]) -> usize {
    let mut cursors = vec![0usize; others.len()];
    names
        .iter()
        .filter(|name| {
            let mut found = false;
            for (list, at) in others.iter().zip(cursors.iter_mut()) {
                while *at < list.len() && list[*at].cmp(name) == Ordering::Less {
                    *at += 1;
                }
                found |= *at < list.len() && list[*at] == **name;
            }
            !found
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(numbers: &[u64]) -> Vec<WaitingName> {
        numbers
            .iter()
            .map(|&n| WaitingName::parse(&format!("999.{n}.ddmqa{n}")).unwrap())
            .collect()
    }

    #[test]
    fn flows_count_arrivals_and_departures_by_name() {
        let before = Survey {
            waiting: names(&[1, 2, 3, 4]),
            in_flight: names(&[0]),
            ..Survey::default()
        };
        // 1 and 2 were consumed (1 still in flight), 0 was acked, 5 and 6 were published,
        // 7 was published and consumed between the looks.
        let now = Survey {
            waiting: names(&[3, 4, 5, 6]),
            in_flight: names(&[1, 7]),
            ..Survey::default()
        };
        assert_eq!(flows(&before, &now), (3, 3));
    }
}
