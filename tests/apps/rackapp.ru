# A rack app serving the same JSON pages as djangoapp.py, for puma (cluster mode) in
# scripts/bench-servers and tests/servers.rs. Ruby here has no sqlite3 gem, so each worker
# loads APP_DATA/rows.tsv (written by `djangoapp.py init`) as raw lines, and every
# request hydrates its rows into hashes (the work an ORM does) and renders them as JSON.
#   /rows?offset=O&limit=N   N rows (1..5000) as one JSON object
#   /health                  `ok PID`
require "json"
require "time"

data = ENV.fetch("APP_DATA") { File.join(__dir__, "data") }
LINES = File.readlines(File.join(data, "rows.tsv"), chomp: true).map(&:freeze).freeze
MAX_ROWS = 5000

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
  else
    [404, { "content-type" => "text/plain" }, ["not found\n"]]
  end
end)
