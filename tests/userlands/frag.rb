# A fragmented Ruby heap under libmemtrim.so (tests/userlands/check-release): 200k strings of
# 1000 bytes (each a malloc'd buffer), all but one in 16 dropped and collected; live bytes (the
# library's, through the C API) follow, memtrim_trim() gives the freed pages back, and the kept
# strings are intact. Exits 1 on the first failed check; the last line sums up.
require "fiddle"

GET_STATS = Fiddle::Function.new(Fiddle::Handle::DEFAULT["memtrim_get_stats"], [Fiddle::TYPE_VOIDP, Fiddle::TYPE_LONG], Fiddle::TYPE_INT)
TRIM = Fiddle::Function.new(Fiddle::Handle::DEFAULT["memtrim_trim"], [], Fiddle::TYPE_LONG)
BUF = Fiddle::Pointer.malloc(40)
N = 200_000
SIZE = 1000
MIB = 1 << 20

def live
  GET_STATS.call(BUF, 40) == 0 or abort("memtrim_get_stats failed")
  BUF[8, 8].unpack1("Q")
end

def rss
  File.read("/proc/self/status")[/VmRSS:\s+(\d+)/, 1].to_i * 1024
end

def check(ok, what)
  puts "#{ok ? 'ok' : 'FAIL'}: #{what}"
  exit 1 unless ok
end

GC.start
base = live
grown = peak = nil
# Ruby's GC scans thread stacks conservatively: a stale word on the main thread's stack that
# still points at the array keeps all of it. Made on a thread of its own, whose stack is gone
# once it ends, the array has no reference left but its slice of kept strings.
kept = Thread.new do
  strings = Array.new(N) { |i| ("%07d" % i) + "x" * (SIZE - 7) }
  grown = live - base
  peak = rss
  strings.each_slice(16).map(&:first)
end.value
check(grown >= N * SIZE && grown <= N * SIZE * 13 / 10, "#{N} strings of #{SIZE} bytes raise live bytes by #{grown / MIB} MiB")
GC.start(full_mark: true, immediate_sweep: true)
left = live - base
check(left <= grown / 16 + 16 * MIB, "dropping 15 in 16 (Ruby keeps its object pages) leaves #{left / MIB} MiB of #{grown / MIB} MiB live")
TRIM.call
after = rss
check(peak - after >= 64 * MIB, "RSS #{peak / MIB} MiB -> #{after / MIB} MiB after the release")
check(kept.each_with_index.all? { |s, i| s == ("%07d" % (i * 16)) + "x" * (SIZE - 7) }, "the kept strings are intact")
puts "ruby #{RUBY_VERSION}: live +#{grown / MIB} MiB, #{left / MIB} MiB after the drop; RSS #{peak / MIB} -> #{after / MIB} MiB"
