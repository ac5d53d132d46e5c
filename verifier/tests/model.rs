//! A model-based test of the verifier's sync state machine (contract §8,
//! "it never goes back").
//!
//! Each run follows a seeded random schedule against a mock issuer on
//! loopback, interleaving revocations, suspensions and resumptions with the
//! faults a verifier meets in production: stream drops, a stream that
//! refuses subscribers (every slot held) and connects late, lost replay
//! history (`reset`), gaps in the sequence, a shared cache that hands back
//! old copies of the status list and the JWKS whatever the request asks
//! (as nginx's `proxy_cache` does by default), an issuer whose sequence
//! starts over in a new epoch, fetch errors and slow responses, and
//! signing-key rotations. The cache keeps what HTTP lets it keep: the list
//! index is `no-store`, and caches that store it anyway are out of scope
//! (`docs/security.md`).
//!
//! After every step it checks the invariant users rely on: **a key revoked
//! (or suspended) more than the push latency ago is never accepted while
//! the verifier reports status data newer than that change.** Accepting it
//! is allowed only when the verifier admits its data predates the change
//! (its `status_age`), which the staleness bound then limits. At the end
//! every fault is healed and the verifier must converge: invalid keys
//! refused, valid ones accepted — never going back must not mean stuck.
//!
//! Bounded and seeded: a failure prints the seed and the schedule, and
//! `MODEL_SEED=<n>` replays one seed.

#![allow(clippy::unwrap_used)]

#[path = "support/mock_issuer.rs"]
mod mock_issuer;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use latchkey_verifier::{TokenStatus, Verifier, VerifyError};
use mock_issuer::{AUDIENCE, MockIssuer};

/// How long a pushed change may take to reach the verifier on loopback
/// (generous: CI machines are busy).
const PUSH_LATENCY: Duration = Duration::from_millis(600);
const STEPS: usize = 45;
const SEEDS: u64 = 8;

/// xorshift64*: small, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

struct Token {
    token: String,
    idx: u64,
    /// Since when the issuer says it must not be accepted.
    invalid_since: Option<Instant>,
}

struct Run {
    seed: u64,
    rng: Rng,
    mock: MockIssuer,
    verifier: Verifier,
    tokens: Vec<Token>,
    log: String,
    next_epoch: u32,
}

impl Run {
    fn note(&mut self, what: impl AsRef<str>) {
        let _ = writeln!(self.log, "  {}", what.as_ref());
    }

    fn mint(&mut self) {
        let (token, idx) = self.mock.mint();
        self.tokens.push(Token {
            token,
            idx,
            invalid_since: None,
        });
    }

    fn pick(&mut self, valid: bool) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.tokens.len())
            .filter(|&i| self.tokens[i].invalid_since.is_none() == valid)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        Some(candidates[self.rng.below(candidates.len() as u64) as usize])
    }

    /// One random step of the schedule.
    fn step(&mut self) {
        match self.rng.below(15) {
            0..=2 => {
                if let Some(i) = self.pick(true) {
                    let status = if self.rng.chance(70) {
                        TokenStatus::Invalid
                    } else {
                        TokenStatus::Suspended
                    };
                    self.mock.set_status(self.tokens[i].idx, status);
                    self.tokens[i].invalid_since = Some(Instant::now());
                    self.note(format!("token {i}: {status:?}"));
                }
            }
            3 => {
                if let Some(i) = self.pick(false) {
                    // Revocation is final at the issuer; the mock allows a
                    // resume of either, which only makes the model harder.
                    self.mock.set_status(self.tokens[i].idx, TokenStatus::Valid);
                    self.tokens[i].invalid_since = None;
                    self.note(format!("token {i}: valid again"));
                }
            }
            4 => {
                self.mock.drop_streams();
                self.note("streams dropped");
            }
            5 => {
                let refused = self.rng.chance(60);
                self.mock.refuse_streams(refused);
                self.note(format!("stream subscribers refused: {refused}"));
            }
            6 => {
                self.mock.forget_history();
                self.mock.drop_streams();
                self.note("replay history lost, streams dropped");
            }
            7 => {
                self.mock.skip_seq();
                self.note("a sequence number skipped (gap)");
            }
            8 | 9 => {
                let age = self.rng.chance(70).then(|| 1 + self.rng.below(6) as usize);
                self.mock.serve_stale_lists(age);
                self.note(format!("cache serves lists {age:?} copies old"));
            }
            10 => {
                let age = self.rng.chance(60).then(|| 1 + self.rng.below(4) as usize);
                self.mock.serve_stale_jwks(age);
                if self.rng.chance(50) {
                    self.mock.rotate();
                    self.mint();
                    self.note("signing key rotated, token minted with it");
                }
                self.note(format!("cache serves the JWKS {age:?} copies old"));
            }
            11 => {
                self.next_epoch += 1;
                let seq = self.rng.below(50);
                let epoch = format!("epoch-{}-{}", self.seed, self.next_epoch);
                self.mock.restart_sequence(seq, &epoch);
                self.note(format!("issuer sequence starts over at {seq} ({epoch})"));
            }
            12 => {
                let offline = self.rng.chance(50);
                self.mock.set_offline(offline);
                self.note(format!("issuer offline: {offline}"));
            }
            13 => {
                let delay = match self.rng.below(4) {
                    0 => 0,
                    1 => 50,
                    2 => 300,
                    _ => 2_500, // past the request timeout
                };
                self.mock.set_list_delay(delay);
                self.note(format!("lists answer after {delay} ms"));
            }
            _ => {
                self.mint();
                self.note(format!("token {} minted", self.tokens.len() - 1));
            }
        }
    }

    /// The invariant, for every token the issuer says is not valid.
    fn check(&self) -> Result<(), String> {
        let now = Instant::now();
        for (i, token) in self.tokens.iter().enumerate() {
            let Some(since) = token.invalid_since else {
                continue;
            };
            let elapsed = now.duration_since(since);
            if elapsed <= PUSH_LATENCY {
                continue;
            }
            let before = self.verifier.sync_status();
            let result = self.verifier.verify(&token.token);
            let after = self.verifier.sync_status();
            if result.is_ok() {
                // What the verifier claims: its data is `age` old.
                let age = match (before.status_age, after.status_age) {
                    (Some(a), Some(b)) => a.max(b),
                    _ => continue, // no data: it admits it knows nothing
                };
                if age + PUSH_LATENCY < elapsed {
                    return Err(format!(
                        "token {i} was accepted {elapsed:?} after it became invalid, while the verifier \
                         reported status data only {age:?} old (stale: {}, stream connected: {}, last error: {:?})",
                        after.stale, after.stream_connected, after.last_error
                    ));
                }
            }
        }
        Ok(())
    }

    fn heal(&self) {
        self.mock.serve_stale_lists(None);
        self.mock.serve_stale_index(None);
        self.mock.serve_stale_jwks(None);
        self.mock.refuse_streams(false);
        self.mock.set_offline(false);
        self.mock.set_list_delay(0);
    }

    /// After healing: every token is judged as the issuer says, soon.
    async fn converges(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let mut wrong = None;
            for (i, token) in self.tokens.iter().enumerate() {
                let result = self.verifier.verify_or_refresh(&token.token).await;
                let right = match token.invalid_since {
                    None => result.is_ok(),
                    Some(_) => matches!(result, Err(VerifyError::Revoked | VerifyError::Suspended)),
                };
                if !right {
                    wrong = Some(format!("token {i}: {result:?}"));
                    break;
                }
            }
            match wrong {
                None => return Ok(()),
                Some(why) if Instant::now() > deadline => {
                    return Err(format!(
                        "after healing, the verifier did not converge: {why}; {:?}",
                        self.verifier.sync_status()
                    ));
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

async fn run(seed: u64) -> Result<(), String> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mock = MockIssuer::start().await;
    // Lists are polled every second, JWKS refreshes are allowed often.
    mock.set_ttl(1);
    mock.set_jwks_max_age(1);
    let mut log = format!("seed {seed}:\n");
    let late_stream = rng.chance(40);
    if late_stream {
        mock.refuse_streams(true);
        log.push_str("  stream subscribers refused at start-up\n");
    }
    let verifier = Verifier::builder(&mock.url, AUDIENCE)
        .staleness(Duration::from_secs(4))
        .jwks_cooldown(Duration::from_millis(200))
        .request_timeout(Duration::from_secs(2))
        .build()
        .await
        .map_err(|e| format!("seed {seed}: build failed: {e}"))?;
    let mut run = Run {
        seed,
        rng,
        mock,
        verifier,
        tokens: Vec::new(),
        log,
        next_epoch: 1,
    };
    for _ in 0..6 {
        run.mint();
    }
    for _ in 0..STEPS {
        run.step();
        let pause = 20 + run.rng.below(230);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        if run.rng.chance(30) {
            run.mock.keep_alive();
        }
        run.check().map_err(|e| format!("{e}\n{}", run.log))?;
    }
    run.heal();
    run.note("healed");
    run.converges()
        .await
        .map_err(|e| format!("{e}\n{}", run.log))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_never_accepted_while_the_verifier_reports_fresh_data() {
    let seeds: Vec<u64> = match std::env::var("MODEL_SEED") {
        Ok(seed) => vec![seed.parse().expect("MODEL_SEED is a number")],
        Err(_) => (1..=SEEDS).collect(),
    };
    let runs: Vec<_> = seeds.into_iter().map(|s| tokio::spawn(run(s))).collect();
    let mut failures = Vec::new();
    for handle in runs {
        if let Err(e) = handle.await.unwrap() {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
