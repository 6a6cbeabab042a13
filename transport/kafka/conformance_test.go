package kafka

import (
	"testing"

	"github.com/go-cap/cap/transport"
	"github.com/go-cap/cap/transport/transporttest"
)

func TestConformance(t *testing.T) {
	transporttest.Run(t, transporttest.Harness{
		New: func(t *testing.T) transport.Transport {
			tr, err := New(testConfig(t))
			if err != nil {
				t.Fatal(err)
			}
			return tr
		},
		Caps: transporttest.Capabilities{Wildcards: true, Redelivery: true, Durable: true},
	})
}
