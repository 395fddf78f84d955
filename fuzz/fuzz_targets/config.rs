//! Fuzzes the configuration file reader: any text either loads or is refused with a message,
//! never a panic; a configuration that loads compiles into the kernel's records and prints
//! redacted.
#![no_main]

use callguard::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::parse(text) {
        Ok(cfg) => {
            let _ = (cfg.kernel_config(), cfg.kernel_limits());
            let shown = cfg.redacted();
            assert!(toml::to_string(&shown).is_ok(), "a loaded configuration prints");
        }
        Err(message) => assert!(!message.is_empty(), "a refusal says why"),
    }
});
