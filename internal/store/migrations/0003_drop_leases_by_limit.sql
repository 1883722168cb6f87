-- leases_by_limit served only the deletion of a whole limit, a rare admin
-- action, yet every grant and release had to update it: a second B-tree
-- written per change. Without it a grant and its release commit in 34 µs
-- instead of 60 µs (BenchmarkGrantRelease serial), and deleting a limit
-- scans the leases table instead: about 1 ms per 10,000 live leases of the
-- whole server (BenchmarkDeleteLimit: 12.5 ms with 100,000).
DROP INDEX leases_by_limit;
