package sqlserver

import (
	"fmt"

	"github.com/go-cap/cap/storage"
)

// DefaultSchema is the schema CAP creates its tables in.
const DefaultSchema = "cap"

// Options configures a SQL Server storage. The zero value means the
// defaults.
type Options struct {
	// Schema holds the Published and Received tables. Defaults to
	// DefaultSchema ("cap"), as in CAP. It must be a plain identifier
	// (letters, digits and underscores, not starting with a digit).
	Schema string
}

// withDefaults returns o with zero values replaced by the defaults, or an
// error when an option cannot work.
func (o Options) withDefaults() (Options, error) {
	if o.Schema == "" {
		o.Schema = DefaultSchema
	}
	if err := storage.ValidateIdentifier("schema", o.Schema); err != nil {
		return o, fmt.Errorf("sqlserver: %w", err)
	}
	return o, nil
}
