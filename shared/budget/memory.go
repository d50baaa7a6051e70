package budget

import (
	"bufio"
	"bytes"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// ProcessMemory is the memory this process may use and where the figure
// comes from: the smallest of the Lambda function's memory size, the
// cgroup limit (v2, then v1), GOMEMLIMIT and the machine's RAM. It is 0
// when none can be read.
func ProcessMemory(getenv func(string) string) (int64, string) {
	return processMemory(getenv, os.ReadFile, debug.SetMemoryLimit(-1))
}

func processMemory(getenv func(string) string, readFile func(string) ([]byte, error), goMemLimit int64) (int64, string) {
	best, from := int64(math.MaxInt64), ""
	take := func(n int64, src string) {
		if n > 0 && n < best {
			best, from = n, src
		}
	}
	if mb, err := strconv.ParseInt(getenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"), 10, 64); err == nil {
		take(mb<<20, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
	}
	if b, err := readFile("/sys/fs/cgroup/memory.max"); err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil { // "max" means none
			take(n, "cgroup memory.max")
		}
	} else if b, err := readFile("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err == nil {
		// cgroup v1 says "no limit" with a number near the largest int64.
		if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && n < 1<<60 {
			take(n, "cgroup memory.limit_in_bytes")
		}
	}
	if goMemLimit > 0 && goMemLimit < math.MaxInt64 {
		take(goMemLimit, "GOMEMLIMIT")
	}
	if b, err := readFile("/proc/meminfo"); err == nil {
		take(memTotal(b), "MemTotal")
	}
	if from == "" {
		return 0, ""
	}
	return best, from
}

// memTotal reads "MemTotal:  24568320 kB" from /proc/meminfo.
func memTotal(meminfo []byte) int64 {
	sc := bufio.NewScanner(bytes.NewReader(meminfo))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}
