"""The remote engine: models served by other OpenAI-compatible servers (vLLM, llama.cpp's
Python server, another Jarvis), driven as raw engines so every feature of this server works on
them. `engine` is the engine contract, `pool` the routing over several upstreams, `upstream` one
server, `flavours` what each kind of server speaks, `managed` the servers this one starts."""
