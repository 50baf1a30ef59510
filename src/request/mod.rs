//! Data subject requests (Art. 15, 17, 20): the access export package.

pub mod export;
