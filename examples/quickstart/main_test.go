package main

import "testing"

// The quickstart runs to the end by itself, with no server.
func TestQuickstart(t *testing.T) {
	if err := run(); err != nil {
		t.Fatal(err)
	}
}
