"""The web side: WeChat message pushes (verification, decryption, parsing)."""
