"""WeCom AI bots (智能机器人): settings and the Redis state of streamed answers."""
