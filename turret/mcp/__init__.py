"""`turret mcp`: Turret's capabilities as MCP tools, over stdio or Streamable HTTP.

The bridge holds no credential of its own and no downstream secret: every tool call is one
request to Turret's agent API with the agent's own token, and Turret decides. Layout: `names`
(tool names, pure), `tools` (listings and answers to MCP values, pure), `client` (the HTTP
client to Turret), `bridge` (the SDK server and its handlers), `stdio` and `http` (transports),
`entry` (the `turret mcp` command).
"""
