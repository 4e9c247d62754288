# Calls rackapp.ru in this process for each `offset limit` line of stdin (no server, no socket,
# no thread): the request work alone, for scripts/bench-request-cost.
#
#   ruby call_rack.rb N < pages    prints `N BYTES` (the response bytes, a check)
require "rack"
require "rack/mock"

app = Rack::Builder.parse_file(File.join(__dir__, "..", "..", "tests", "apps", "rackapp.ru"))
app = app[0] if app.is_a?(Array) # rack 2 returns [app, options]
n = Integer(ARGV[0])
total = 0
$stdin.each_line.first(n).each do |line|
  offset, limit = line.split.map(&:to_i)
  status, _headers, body = app.call(Rack::MockRequest.env_for("/rows?offset=#{offset}&limit=#{limit}"))
  abort "status #{status}" unless status == 200
  body.each { |b| total += b.bytesize }
end
puts "#{n} #{total}"
