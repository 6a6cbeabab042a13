package storage

import (
	"fmt"
	"regexp"
)

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

// ValidateIdentifier returns ErrInvalidIdentifier unless s is a plain SQL
// identifier (letters, digits and underscores, not starting with a digit, at
// most 63 characters). Storages call it on every schema, prefix or table
// name that reaches SQL text, so no option can inject SQL.
func ValidateIdentifier(kind, s string) error {
	if !identRE.MatchString(s) {
		return fmt.Errorf("%w: %s %q must match %s", ErrInvalidIdentifier, kind, s, identRE)
	}
	return nil
}
