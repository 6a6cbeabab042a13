//go:build race

package mongodb_test

// raceEnabled: the test binary runs under the race detector, so FerretDB
// runs in a process of its own (see startFerretProcess).
const raceEnabled = true
