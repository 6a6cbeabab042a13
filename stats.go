package cap

import "time"

// Stats are running totals of the bus's work since New, kept in memory from
// the same events as its OpenTelemetry metrics. Reading them costs no
// query; the dashboard derives its per-second rates from them.
type Stats struct {
	Published        int64         // messages stored by publishes
	Sent             int64         // sends to the broker that succeeded
	SendFailed       int64         // sends that failed
	Consumed         int64         // deliveries stored in the Received table
	Processed        int64         // handler runs
	ProcessedTime    time.Duration // total time of those runs
	HandledSucceeded int64         // messages whose handler succeeded
	HandledRetry     int64         // failures to be retried
	HandledFailed    int64         // messages that failed for good
	Taken            time.Time     // when the totals were read
}

// Stats returns the bus's running totals.
func (b *Bus[TTx]) Stats() Stats {
	c := &b.tel.Counters
	return Stats{
		Published: c.Published.Load(), Sent: c.Sent.Load(), SendFailed: c.SendFailed.Load(),
		Consumed: c.Consumed.Load(), Processed: c.Processed.Load(),
		ProcessedTime:    time.Duration(c.ProcessedNanos.Load()),
		HandledSucceeded: c.HandledSucceeded.Load(), HandledRetry: c.HandledRetry.Load(),
		HandledFailed: c.HandledFailed.Load(), Taken: time.Now(),
	}
}
