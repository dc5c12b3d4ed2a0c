//! What the worker does to its own process before any key arrives: no core dumps
//! (`RLIMIT_CORE = 0`) and not dumpable (`PR_SET_DUMPABLE = 0`, which also stops other processes
//! of the same user from attaching a debugger or reading `/proc/PID/mem`). A worker that cannot
//! do both refuses to run.

use rustix::process::{DumpableBehavior, Resource, Rlimit, getrlimit, set_dumpable_behavior, setrlimit};

/// Turns core dumps and ptrace access off for this process.
pub fn no_core_dumps() -> Result<(), String> {
    setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: Some(0) })
        .map_err(|e| format!("cannot set RLIMIT_CORE to 0: {e}"))?;
    set_dumpable_behavior(DumpableBehavior::NotDumpable)
        .map_err(|e| format!("cannot clear the dumpable flag (PR_SET_DUMPABLE): {e}"))?;
    let core = getrlimit(Resource::Core);
    if core.current != Some(0) || core.maximum != Some(0) {
        return Err("RLIMIT_CORE is still not 0 after setting it".into());
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn core_dumps_are_off_afterwards() {
        super::no_core_dumps().unwrap();
        let core = rustix::process::getrlimit(rustix::process::Resource::Core);
        assert_eq!(core.current, Some(0));
        assert_eq!(rustix::process::dumpable_behavior().unwrap(), rustix::process::DumpableBehavior::NotDumpable);
    }
}
