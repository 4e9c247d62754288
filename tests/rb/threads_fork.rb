# Ruby as a host of libmemtrim.so: threads, fork (also from a thread while others allocate),
# a spawned child, C extensions (json, zlib, digest) and GC with compaction.
#
# Everything it prints on stdout is deterministic: tests/hosts.rs runs it without and with the
# library preloaded and requires the same stdout, and an empty stderr without the library.
# With RB_MEMTRIM_CHECK=1 (set by the test only when the library is preloaded) it also reads
# memtrim_get_stats through Fiddle and checks that live_bytes rose by >= 45 MiB while 50 MiB of
# strings were alive and came back within 4 MiB after they were freed and the GC ran; those
# lines go to stderr and start with "check ok" (or "check FAIL", and exit 1).

require "digest"
require "digest/sha2" # loaded here: Digest's lazy autoload races when threads first touch SHA256
require "json"
require "zlib"

$stdout.sync = true

def work(seed, n)
  # allocation-heavy and deterministic: strings, arrays, hashes, bignums, JSON, zlib
  h = {}
  acc = +""
  x = seed
  n.times do |i|
    x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
    key = "k#{x % 997}"
    h[key] = (h[key] || []) << (x % 100_000)
    acc << (x % 26 + 97).chr * (1 + x % 300)
    acc = acc[-20_000..] if acc.size > 40_000
  end
  big = (1..300 + seed).reduce(:*)
  json = JSON.generate(h.sort.to_h)
  z = Zlib::Deflate.deflate(json)
  back = JSON.parse(Zlib::Inflate.inflate(z))
  raise "json/zlib round trip" unless back == h.sort.to_h
  Digest::SHA256.hexdigest(json + acc + big.to_s)[0, 16]
end

def threads(tag, count, n)
  results = Array.new(count)
  count.times.map do |t|
    Thread.new(t) { |i| results[i] = work(i + 1, n) }
  end.each(&:join)
  "#{tag}: #{Digest::SHA256.hexdigest(results.join(','))[0, 16]}"
end

def memtrim_check
  return unless ENV["RB_MEMTRIM_CHECK"] == "1"

  require "fiddle"
  begin
    fn = Fiddle::Function.new(Fiddle::Handle::DEFAULT["memtrim_get_stats"],
                              [Fiddle::TYPE_VOIDP, Fiddle::TYPE_SIZE_T], Fiddle::TYPE_INT)
  rescue Fiddle::DLError
    warn "check FAIL: memtrim_get_stats is not in the process"
    exit 1
  end
  read = lambda do
    buf = Fiddle::Pointer.malloc(40, Fiddle::RUBY_FREE)
    rc = fn.call(buf, 40)
    size, version, live, peak, allocs, frees = buf.to_str(40).unpack("LLQQQQ")
    unless rc == 0 && size == 40 && version == 1
      warn "check FAIL: memtrim_get_stats rc #{rc} size #{size} version #{version}"
      exit 1
    end
    [live, peak, allocs, frees]
  end
  3.times { GC.start(full_mark: true, immediate_sweep: true) }
  live0, = read.call
  strings = Array.new(50) { |i| ("%c" % (97 + i % 26)) * (1 << 20) } # 50 MiB of malloc'ed bodies
  live1, peak1, = read.call
  rise = live1 - live0
  if rise < 45 << 20 || peak1 < live1
    warn "check FAIL: 50 MiB of strings raised live_bytes by #{rise} (peak #{peak1}, live #{live1})"
    exit 1
  end
  warn "check ok: 50 MiB of strings raised live_bytes by #{rise >> 20} MiB"
  strings.clear
  strings = nil
  3.times { GC.start(full_mark: true, immediate_sweep: true) }
  live2, = read.call
  if (live2 - live0).abs > 4 << 20
    warn "check FAIL: after freeing, live_bytes #{live2} vs #{live0} at the start (diff #{live2 - live0})"
    exit 1
  end
  warn "check ok: after freeing, live_bytes within 4 MiB of the start (diff #{live2 - live0} bytes)"
end

puts threads("main threads", 8, 20_000)

# fork children that run threads of their own and report through a pipe
readers = 4.times.map do |c|
  r, w = IO.pipe
  pid = fork do
    r.close
    w.puts threads("child #{c}", 4, 10_000)
    w.close
    exit!(0)
  end
  w.close
  [pid, r]
end
readers.each do |pid, r|
  out = r.read
  r.close
  _, st = Process.wait2(pid)
  raise "child #{pid} failed: #{st.inspect}" unless st.success?
  puts out
end

# fork from a thread while other threads keep allocating
stop = false
busy = 3.times.map do |i|
  Thread.new { s = 0; s += work(i + 100, 500).hash & 1 until stop; s }
end
forked = Thread.new do
  2.times.map do |k|
    r, w = IO.pipe
    pid = fork do
      r.close
      w.puts "forked from a thread #{k}: #{work(k + 50, 5000)}"
      w.puts threads("forked from a thread #{k} threads", 3, 3000)
      w.close
      exit!(0)
    end
    w.close
    out = r.read
    _, st = Process.wait2(pid)
    raise "forked child failed: #{st.inspect}" unless st.success?
    out
  end
end.value
stop = true
busy.each(&:join)
forked.each { |o| puts o }

# a spawned ruby (exec: the environment, and so LD_PRELOAD, is inherited)
out = IO.popen([RbConfig.ruby, "-e", 'require "json"; puts JSON.generate((1..50).map { |i| i * i }.sum)'], &:read)
raise "spawned ruby failed" unless $?.success?
puts "spawned: #{out.strip}"

# GC with compaction moves objects and frees heap pages
list = Array.new(200_000) { |i| "s#{i}" * (i % 7) }
list.select!.with_index { |_, i| (i % 5).zero? }
GC.start(full_mark: true, immediate_sweep: true)
GC.compact if GC.respond_to?(:compact)
puts "after compact: #{list.size} #{Digest::SHA256.hexdigest(list.join)[0, 16]}"

memtrim_check
puts "done"
