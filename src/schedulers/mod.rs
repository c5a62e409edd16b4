//! Samplers and noise schedules. (being written)
