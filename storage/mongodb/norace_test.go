//go:build !race

package mongodb_test

const raceEnabled = false
