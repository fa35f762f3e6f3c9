package bench

import (
	"syscall"
	"testing"
	"time"
)

// cpuMeter reads the process's CPU time (user and system, every thread), which contention
// from other processes on the machine disturbs much less than wall time. Client, gateway
// and backend share the process, so a row's CPU is all three's: compare a row with itself
// before and after a change of the gateway, not with imapbench's proxy-only figures.
type cpuMeter struct{ start time.Duration }

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPU() cpuMeter { return cpuMeter{processCPU()} }

func (m cpuMeter) used() time.Duration { return processCPU() - m.start }

// reportPerGB reports CPU seconds per GB moved, b.N times size bytes.
func (m cpuMeter) reportPerGB(b *testing.B, size int) {
	b.ReportMetric(m.used().Seconds()/(float64(b.N)*float64(size)/1e9), "cpu-s/GB")
}

// reportPerOp reports CPU milliseconds per operation.
func (m cpuMeter) reportPerOp(b *testing.B, unit string) {
	b.ReportMetric(float64(m.used().Microseconds())/1e3/float64(b.N), unit)
}
