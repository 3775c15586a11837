//! Load generator behind `kvs-bench`.
