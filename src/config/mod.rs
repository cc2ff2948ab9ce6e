//! Configuration: the TOML file ([`raw`]) is parsed, interpolated ([`values`]) and validated
//! ([`validate`]) into [`Config`], the only form the rest of the crate reads. Keys left out
//! take the values in [`defaults`]; a refusal is a [`ConfigError`].

pub mod defaults;
mod error;
mod raw;
mod validate;
mod validated;
pub mod values;

use std::path::Path;

pub use error::{ConfigError, NodeAddressFault, Problem};
pub use validate::parse_config;
pub use validated::*;

/// Reads and validates a config file.
pub fn load_config(path: &Path) -> Result<Config, ConfigError> {
    let source = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_config(&source, path)
}
