//! Progress of a rehearsal (`medtech-ceremony run`): one bar per party, showing the phase its
//! `join` process has reached, read from the lines that process writes to its log.
//!
//! The phases are the protocol's (docs/dkg.md): candidate batches (sieve, opening `N`, the
//! first biprimality repetition), the committed biprimality repetitions and the gcd step, the
//! decryption-key rounds, and the signed transcript. A party that works through several
//! candidate batches stays in the first phase with the batch number as its message.
//!
//! Bars are drawn only when standard error is a terminal; otherwise (CI, a redirected log)
//! nothing is drawn and the caller's progress lines are the only output.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How far one party has got, as its log shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Nothing recognisable logged yet (connecting to the others).
    Connecting,
    /// Working on candidate batch `n` (1-based).
    Candidates(u32),
    /// A modulus passed the first repetition; the committed repetitions and the gcd step run.
    Biprimality,
    /// The modulus is accepted; the decryption key is being shared.
    Key,
    /// The process ended successfully.
    Done,
    /// The process failed, with the last line of its log.
    Failed(String),
}

impl Stage {
    /// Position of the stage on a bar of [`PHASES`] steps.
    pub fn position(&self) -> u64 {
        match self {
            Stage::Connecting => 0,
            Stage::Candidates(_) => 1,
            Stage::Biprimality => 2,
            Stage::Key => 3,
            Stage::Done | Stage::Failed(_) => PHASES,
        }
    }

    /// What the bar says next to itself.
    pub fn message(&self) -> String {
        match self {
            Stage::Connecting => "connecting".into(),
            Stage::Candidates(n) => format!("candidates, batch {n}"),
            Stage::Biprimality => "biprimality and gcd".into(),
            Stage::Key => "decryption key and signatures".into(),
            Stage::Done => "done".into(),
            Stage::Failed(why) => format!("FAILED: {why}"),
        }
    }
}

/// Steps on a bar: connect, candidates, biprimality, key, done.
pub const PHASES: u64 = 4;

/// The stage a `join` log shows: the last line that names one wins.
pub fn stage_of_log(log: &str) -> Stage {
    let mut stage = Stage::Connecting;
    for line in log.lines() {
        if let Some(rest) = line.split("candidate batch ").nth(1) {
            let n = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            stage = Stage::Candidates(n);
        } else if line.contains("passed the first biprimality test") {
            stage = Stage::Biprimality;
        } else if line.contains("modulus accepted") {
            stage = Stage::Key;
        }
    }
    stage
}

/// One bar per party, or nothing when standard error is not a terminal.
pub struct Bars {
    bars: Vec<ProgressBar>,
    drawn: bool,
    // Kept so the bars stay drawn together until `Bars` is dropped.
    _multi: MultiProgress,
}

impl Bars {
    /// Bars for parties `1..=parties`, drawn if standard error is a terminal.
    pub fn new(parties: u16) -> Bars {
        let drawn = std::io::stderr().is_terminal();
        let target = if drawn {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        // The template is a constant; if indicatif ever refused it, the default style is used.
        let style = ProgressStyle::with_template(
            "  party {prefix:>2} [{elapsed_precise}] {bar:24.cyan/blue} {msg}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        let bars = (1..=parties)
            .map(|i| {
                let bar = multi.add(ProgressBar::new(PHASES));
                bar.set_style(style.clone());
                bar.set_prefix(i.to_string());
                bar.set_message(Stage::Connecting.message());
                bar.enable_steady_tick(Duration::from_millis(250));
                bar
            })
            .collect();
        Bars {
            bars,
            drawn,
            _multi: multi,
        }
    }

    /// Whether anything is drawn (if not, the caller prints its lines).
    pub fn drawn(&self) -> bool {
        self.drawn
    }

    /// Shows party `i` (1-based) at `stage`.
    pub fn set(&self, i: u16, stage: &Stage) {
        if let Some(bar) = self.bars.get(usize::from(i).wrapping_sub(1)) {
            bar.set_position(stage.position());
            bar.set_message(stage.message());
            if matches!(stage, Stage::Done | Stage::Failed(_)) {
                bar.finish();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_is_read_as_the_last_phase_it_names() {
        assert_eq!(stage_of_log(""), Stage::Connecting);
        let mut log = String::from("party 2: [   0.1 s] candidate batch 1 (32768 pairs)\n");
        assert_eq!(stage_of_log(&log), Stage::Candidates(1));
        log.push_str("party 2: [   2.9 s] candidate batch 2 (32768 pairs)\n");
        assert_eq!(stage_of_log(&log), Stage::Candidates(2));
        log.push_str("party 2: [   4.0 s] a modulus passed the first biprimality test\n");
        assert_eq!(stage_of_log(&log), Stage::Biprimality);
        log.push_str("party 2: [   4.6 s] modulus accepted; sharing the decryption key\n");
        assert_eq!(stage_of_log(&log), Stage::Key);
        assert!(Stage::Key.position() < Stage::Done.position());
    }

    #[test]
    fn a_garbled_batch_number_does_not_stop_the_reader() {
        assert_eq!(
            stage_of_log("candidate batch x\nnoise\n"),
            Stage::Candidates(1)
        );
    }

    #[test]
    fn bars_for_an_unknown_party_are_ignored() {
        let bars = Bars::new(2);
        bars.set(0, &Stage::Done);
        bars.set(3, &Stage::Done);
        bars.set(1, &Stage::Failed("x".into()));
    }
}
