# A rack app serving the same JSON pages as djangoapp.py, for puma (cluster mode) in
# scripts/bench-servers and tests/servers.rs. Ruby here has no sqlite3 gem, so each worker
# loads APP_DATA/rows.tsv (written by `djangoapp.py init`) as raw lines, and every
# request hydrates its rows into hashes (the work an ORM does) and renders them as JSON.
#   /rows?offset=O&limit=N   N rows (1..5000) as one JSON object
#   /health                  `ok PID`
#   /leak?mb=N&sleep=S       leaks on purpose (tests/limits.rs): appends N MiB (0..1024, written,
#                            so resident) to a list that is never freed, then sleeps S seconds
#                            (0..30, default 0); answers {"pid": PID, "leaked_mb": TOTAL}
require "json"
require "time"

data = ENV.fetch("APP_DATA") { File.join(__dir__, "data") }
LINES = File.readlines(File.join(data, "rows.tsv"), chomp: true).map(&:freeze).freeze
MAX_ROWS = 5000
LEAKED = [] # never freed: the leak of /leak
LEAK_LOCK = Mutex.new

def hydrate(line)
  f = line.split("\t")
  id = f[0].to_i
  {
    "id" => id, "name" => f[1], "email" => f[2], "city" => f[3], "score" => f[4].to_f,
    "visits" => f[5].to_i, "active" => f[6] == "1", "created" => Time.at(f[7].to_i).utc.iso8601,
    "tags" => f[8].split(","), "bio" => f[9], "url" => "/rows/#{id}"
  }
end

run(lambda do |env|
  case env["PATH_INFO"]
  when "/rows"
    q = Rack::Utils.parse_query(env["QUERY_STRING"].to_s)
    offset = Integer(q.fetch("offset", "0"), exception: false)
    limit = Integer(q.fetch("limit", "1000"), exception: false)
    unless offset && limit && offset >= 0 && limit >= 1 && limit <= MAX_ROWS
      next [400, { "content-type" => "text/plain" }, ["0 <= offset, 1 <= limit <= 5000\n"]]
    end
    page = (LINES[offset, limit] || []).map { |l| hydrate(l) }
    body = JSON.generate({ "offset" => offset, "count" => page.size, "pid" => Process.pid, "rows" => page })
    [200, { "content-type" => "application/json", "content-length" => body.bytesize.to_s }, [body]]
  when "/health"
    [200, { "content-type" => "text/plain" }, ["ok #{Process.pid}\n"]]
  when "/leak"
    q = Rack::Utils.parse_query(env["QUERY_STRING"].to_s)
    mb = Integer(q.fetch("mb", "1"), exception: false)
    pause = Float(q.fetch("sleep", "0"), exception: false)
    unless mb && pause && mb >= 0 && mb <= 1024 && pause >= 0 && pause <= 30
      next [400, { "content-type" => "text/plain" }, ["0 <= mb <= 1024, 0 <= sleep <= 30\n"]]
    end
    # 1 MiB strings filled with a non-zero byte: resident, and live to the allocator
    total = LEAK_LOCK.synchronize do
      mb.times { LEAKED << ("\x01" * (1 << 20)) }
      LEAKED.size
    end
    sleep(pause) if pause > 0
    body = JSON.generate({ "pid" => Process.pid, "leaked_mb" => total })
    [200, { "content-type" => "application/json", "content-length" => body.bytesize.to_s }, [body]]
  else
    [404, { "content-type" => "text/plain" }, ["not found\n"]]
  end
end)
