//! plastic-convrnn
