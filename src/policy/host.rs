//! The wasmtime side: one [`PolicyHost`] (engine, epoch ticker, compiled-code cache) loads
//! [`Policy`]s; each evaluation runs in a fresh instance from a cached `InstancePre`, with a memory
//! cap, a fuel budget and an epoch deadline. No WASI, no host functions: the linker is empty.
//! Whatever the guest does, `evaluate` returns a decision; failures are recorded in it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig,
    ResourceLimiter, Store, Trap,
};

use super::bindings::{ChordPolicy as WitPolicy, ChordPolicyPre};
use super::cache::{CacheOutcome, CompiledCache, sha256_hex};
use super::check::check_decision;
use super::convert::{raw_decision, window_input};
use super::error::PolicyError;
use super::metadata::{PolicyMetadata, read_metadata};
use super::types::{
    Decision, EvalCost, Evaluation, FailureKind, Knobs, Limits, PolicyRef, PolicyState,
};
use crate::signals::WindowFeatures;

/// Limits applied to every evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Linear memory cap per instance, bytes.
    pub memory_bytes: usize,
    /// Fuel per evaluation (deterministic: roughly one unit per wasm instruction).
    pub fuel: u64,
    /// Wall-clock deadline per evaluation.
    pub deadline: Duration,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            memory_bytes: 64 << 20,
            fuel: 50_000_000,
            deadline: Duration::from_millis(250),
        }
    }
}

/// How often the epoch advances; the deadline is a whole number of these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Advances the engine's epoch until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("modekeeper-policy-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .ok();
        EpochTicker { stop, handle }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Loads and compiles policies. Cheap to keep for the whole process.
pub struct PolicyHost {
    engine: Engine,
    limits: SandboxLimits,
    cache: Option<CompiledCache>,
    ticker: Arc<EpochTicker>,
}

impl PolicyHost {
    /// A host with the given sandbox limits, caching compiled code under `cache_root` (see
    /// [`super::cache::default_cache_dir`]); `None` compiles every time.
    pub fn new(
        limits: SandboxLimits,
        cache_root: Option<&std::path::Path>,
    ) -> Result<PolicyHost, PolicyError> {
        Self::with_reset(limits, cache_root, SlotReset::for_this_host())
    }

    fn with_reset(
        limits: SandboxLimits,
        cache_root: Option<&std::path::Path>,
        reset: SlotReset,
    ) -> Result<PolicyHost, PolicyError> {
        // Instances come from a small pool of pre-reserved slots: instantiation then costs
        // microseconds. Should the machine refuse the reservation, fall back to allocating on demand.
        let engine = Engine::new(&engine_config(limits, Some(reset)))
            .or_else(|_| Engine::new(&engine_config(limits, None)))
            .map_err(|e| PolicyError::Compile(format!("{e:#}")))?;
        let cache = cache_root.map(|root| CompiledCache::new(root, &engine));
        let ticker = Arc::new(EpochTicker::start(engine.clone()));
        Ok(PolicyHost {
            engine,
            limits,
            cache,
            ticker,
        })
    }

    pub fn limits(&self) -> SandboxLimits {
        self.limits
    }

    /// Why the compiled-code cache was bypassed since the last call (a directory or file that is
    /// not private to this user), for the caller to show as warnings.
    pub fn cache_warnings(&self) -> Vec<String> {
        self.cache
            .as_ref()
            .map(CompiledCache::take_warnings)
            .unwrap_or_default()
    }

    /// The directory compiled code is cached in, if any.
    pub fn cache_dir(&self) -> Option<&std::path::Path> {
        self.cache.as_ref().map(|c| c.dir())
    }

    /// Reads the metadata (before compiling anything), compiles or loads from the cache, checks the
    /// component against the `chord-policy` world and prepares instantiation.
    pub fn load(&self, bytes: &[u8]) -> Result<Policy, PolicyError> {
        let meta = read_metadata(bytes)?;
        let sha = sha256_hex(bytes);
        let (component, outcome) = self.compile(bytes, &sha)?;
        let linker: Linker<StoreData> = Linker::new(&self.engine);
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| PolicyError::World(format!("{e:#}")))?;
        let pre = ChordPolicyPre::new(pre).map_err(|e| PolicyError::World(format!("{e:#}")))?;
        let reference = PolicyRef {
            name: meta.id.clone(),
            version: meta.version.clone(),
            digest: format!("sha256:{sha}"),
        };
        Ok(Policy {
            meta,
            reference,
            pre: Arc::new(pre),
            engine: self.engine.clone(),
            limits: self.limits,
            cache: outcome,
            _ticker: self.ticker.clone(),
        })
    }

    fn compile(&self, bytes: &[u8], sha: &str) -> Result<(Component, CacheOutcome), PolicyError> {
        if let Some(c) = self.cache.as_ref().and_then(|c| c.load(&self.engine, sha)) {
            return Ok((c, CacheOutcome::Hit));
        }
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| PolicyError::Compile(format!("{e:#}")))?;
        if let Some(cache) = &self.cache {
            // A cache that cannot be written only costs time on the next run.
            if let Ok(serialized) = component.serialize() {
                let _ = cache.store(sha, &serialized);
            }
        }
        Ok((component, CacheOutcome::Compiled))
    }
}

/// Instance slots in the pool: evaluations run one at a time per policy set, so a few suffice.
const POOL_SLOTS: u32 = 32;

/// How a pooled memory slot is made fresh for the next instance. Measured (benches/policy_eval.rs,
/// median per window, instantiation included): keeping 1 MiB resident and zeroing all of it by
/// memset after every evaluation, 45 µs; `GiveBack`, 22–24 µs; `DirtyPages`, 13–15 µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotReset {
    /// Keep the first `KEEP_RESIDENT` bytes resident and reset only the pages the last instance
    /// dirtied, found with the PAGEMAP_SCAN ioctl (Linux 6.7+); the rest is given back.
    DirtyPages,
    /// Give every page back (madvise) and fault in the few the next instance touches.
    GiveBack,
}

impl SlotReset {
    /// `DirtyPages` where the kernel can find dirty pages; elsewhere keeping pages resident would
    /// mean a memset of all of them per evaluation, slower than giving them back.
    fn for_this_host() -> SlotReset {
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            SlotReset::DirtyPages
        } else {
            SlotReset::GiveBack
        }
    }
}

/// Linear memory kept resident between evaluations with `SlotReset::DirtyPages`: a policy's stack,
/// data and early heap (a Rust guest puts 1 MiB of stack below its data). Bounded, so a guest that
/// grew its memory to the cap does not keep it all.
const KEEP_RESIDENT: usize = 2 << 20;

/// `pooled`: instances from a pool of pre-reserved slots, reset between uses as given.
fn engine_config(limits: SandboxLimits, pooled: Option<SlotReset>) -> Config {
    let mut cfg = Config::new();
    cfg.consume_fuel(true)
        .epoch_interruption(true)
        .cranelift_opt_level(OptLevel::Speed)
        .cranelift_nan_canonicalization(true)
        .max_wasm_stack(512 * 1024)
        .wasm_component_model(true);
    if let Some(reset) = pooled {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_SLOTS)
            .total_core_instances(POOL_SLOTS * 2)
            .total_memories(POOL_SLOTS)
            .total_tables(POOL_SLOTS)
            .max_memory_size(limits.memory_bytes)
            .table_keep_resident(1 << 16);
        match reset {
            SlotReset::DirtyPages => pool
                .linear_memory_keep_resident(KEEP_RESIDENT)
                .pagemap_scan(Enabled::Yes),
            SlotReset::GiveBack => pool.linear_memory_keep_resident(0),
        };
        cfg.memory_reservation(limits.memory_bytes as u64)
            .memory_guard_size(1 << 20)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    cfg
}

/// Per-store data: the memory limiter.
pub struct StoreData {
    limiter: MemoryCap,
}

/// `StoreLimits`-like cap that also remembers whether it refused a growth, so an allocation
/// failure (which the guest turns into a trap) is reported as out-of-memory.
struct MemoryCap {
    max_bytes: usize,
    refused: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired <= self.max_bytes;
        self.refused |= !ok;
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        16
    }

    fn tables(&self) -> usize {
        16
    }

    fn memories(&self) -> usize {
        4
    }
}

/// A loaded, ready-to-run policy. Cheap to clone (the compiled code is shared).
#[derive(Clone)]
pub struct Policy {
    meta: PolicyMetadata,
    reference: PolicyRef,
    pre: Arc<ChordPolicyPre<StoreData>>,
    engine: Engine,
    limits: SandboxLimits,
    cache: CacheOutcome,
    _ticker: Arc<EpochTicker>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("policy", &self.reference)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for PolicyHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyHost")
            .field("limits", &self.limits)
            .field("cache", &self.cache_dir())
            .finish_non_exhaustive()
    }
}

impl Policy {
    pub fn metadata(&self) -> &PolicyMetadata {
        &self.meta
    }

    pub fn reference(&self) -> &PolicyRef {
        &self.reference
    }

    /// Whether this load came from the on-disk cache.
    pub fn from_cache(&self) -> bool {
        self.cache == CacheOutcome::Hit
    }

    /// Evaluates one window. `limits` should hold the passport's limits; only those of the knobs the
    /// policy declared are passed in. Never fails: a trap, timeout, OOM or malformed result is a
    /// failed decision that proposes nothing, and the state stays as it was.
    pub fn evaluate(
        &self,
        features: &WindowFeatures,
        knobs: &Knobs,
        limits: &Limits,
        state: &PolicyState,
    ) -> Evaluation {
        let started = Instant::now();
        let allowed = limits.restricted_to(&self.meta.knobs);
        let input = window_input(features, knobs, &allowed, state);
        let mut store = Store::new(
            &self.engine,
            StoreData {
                limiter: MemoryCap {
                    max_bytes: self.limits.memory_bytes,
                    refused: false,
                },
            },
        );
        store.limiter(|d| &mut d.limiter);
        let fuel = self.limits.fuel;
        let ticks = (self.limits.deadline.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
        let _ = store.set_fuel(fuel);
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();

        let outcome = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| (FailureKind::Instantiate, e))
            .and_then(|inst: WitPolicy| {
                inst.call_evaluate(&mut store, &input)
                    .map_err(|e| (FailureKind::Trap, e))
            });
        let used = fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        let refused_memory = store.data().limiter.refused;
        let cost = EvalCost {
            fuel: used,
            micros: started.elapsed().as_micros() as u64,
        };
        match outcome {
            Ok(result) => {
                let (decision, next_state) = check_decision(
                    raw_decision(result),
                    &self.meta,
                    &self.reference,
                    knobs,
                    &allowed,
                    state,
                );
                Evaluation {
                    decision,
                    next_state,
                    cost,
                }
            }
            Err((stage, e)) => {
                let kind = match e.downcast_ref::<Trap>() {
                    Some(Trap::OutOfFuel) => FailureKind::OutOfFuel,
                    Some(Trap::Interrupt) => FailureKind::Timeout,
                    _ if refused_memory => FailureKind::OutOfMemory,
                    Some(_) => FailureKind::Trap,
                    // Not a trap: the result could not be lifted (bad UTF-8, out-of-bounds list).
                    None if stage == FailureKind::Trap => FailureKind::Malformed,
                    None => stage,
                };
                let msg = match kind {
                    FailureKind::OutOfFuel => format!("used all {fuel} fuel units"),
                    FailureKind::Timeout => format!(
                        "ran past its {} ms deadline",
                        self.limits.deadline.as_millis()
                    ),
                    FailureKind::OutOfMemory => format!(
                        "tried to grow memory past {} MiB",
                        self.limits.memory_bytes >> 20
                    ),
                    _ => one_line(&format!("{e:#}")),
                };
                Evaluation {
                    decision: Decision::failed(self.reference.clone(), kind, msg),
                    next_state: state.clone(),
                    cost,
                }
            }
        }
    }
}

fn one_line(s: &str) -> String {
    let mut out: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.len() > 300 {
        let cut = (0..=300)
            .rev()
            .find(|i| out.is_char_boundary(*i))
            .unwrap_or(0);
        out.truncate(cut);
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Knobs, Limits, PolicyState};
    use crate::signals::{DEFAULT_WARMUP_STEPS, DEFAULT_WINDOW_STEPS, FeatureConfig};

    fn windows() -> Vec<WindowFeatures> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/traces/burst.jsonl.gz");
        let cfg = FeatureConfig {
            window_steps: DEFAULT_WINDOW_STEPS,
            warmup_steps: DEFAULT_WARMUP_STEPS,
        };
        crate::pipeline::windows_of(&path, cfg).unwrap()
    }

    /// Whichever way a pooled slot is recycled (tests/policy_sandbox.rs covers the one this host
    /// picks), the next evaluation finds nothing of the last one: the hostile "remember" policy looks
    /// in its statics, its heap (inside and beyond the resident region) and its stack.
    #[test]
    fn every_slot_reset_leaves_a_fresh_memory() {
        let bytes = include_bytes!("../../tests/data/policies/hostile-remember.wasm");
        let windows = windows();
        let mut resets = vec![SlotReset::GiveBack];
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            resets.push(SlotReset::DirtyPages);
        }
        let limits = Limits::reference();
        let knobs = Knobs::baseline(&limits);
        for reset in resets {
            let host = PolicyHost::with_reset(SandboxLimits::default(), None, reset).unwrap();
            let policy = host.load(bytes).unwrap();
            for f in &windows {
                let e = policy.evaluate(f, &knobs, &limits, &PolicyState::default());
                assert!(e.decision.failure.is_none(), "{reset:?}: {:?}", e.decision);
                assert_eq!(
                    e.decision.notes,
                    ["calls-before=0 heap-leftovers=0 stack-leftovers=0"],
                    "{reset:?}, window {}",
                    f.window.index
                );
            }
        }
    }
}
